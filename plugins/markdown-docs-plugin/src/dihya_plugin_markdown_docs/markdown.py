"""Markdown helpers built on markdown-it-py: escaping, GitHub anchors, TOC and checks.

* `escape_inline` / `escape_block` turn untrusted text (from the needs) into Markdown that
  renders as that literal text: no HTML, no emphasis, no links, no headings, no tables.
* `Slugger` reproduces GitHub's heading anchors (github-slugger).
* `join_with_toc` assembles a document from its blocks with a table of contents of the
  headings the builders emitted (one-line ATX heading blocks), without parsing: the fast
  path of `after_generation`. For any block it does not recognise it falls back to
  `insert_toc`, so its output is always exactly `insert_toc`'s.
* `insert_toc` (the reference) parses a document with markdown-it-py, lists its headings
  and writes a table of contents.
* `check_document` parses a document and raises `MarkdownCheckError` when a TOC or
  in-document link does not resolve, a relative link points outside the generated files,
  or the document contains any raw HTML. The preview action and the test suite run it.
"""

from __future__ import annotations

import dataclasses
import functools
import posixpath
import re
import unicodedata
from collections.abc import Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:  # imported by `parser`, when a document is parsed (see its docstring)
    from markdown_it import MarkdownIt
    from markdown_it.token import Token

#: Characters escaped with a backslash wherever they appear: they start or end inline
#: structure (code, emphasis, links, strikethrough, math on GitHub) or split table cells.
_BACKSLASHED: Final = frozenset("\\`*_[]|#~$!")
#: Characters replaced by an entity so raw HTML can never appear.
_ENTITIES: Final = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
#: Line starts that would open a block (list item, setext underline, ordered list).
_BLOCK_START = re.compile(r"^(?:[-+=]|\d{1,9}[.)])")


class MarkdownCheckError(ValueError):
    """A generated document is broken (a bug guard: this should never happen)."""


#: What `_escape_chars` changes in ASCII text (the only control characters there are Cc).
_ASCII_SPECIAL: Final = re.compile(r"[&<>\\`*_\[\]|#~$!\x00-\x08\x0a-\x1f\x7f]")


def _escape_ascii(match: re.Match[str]) -> str:
    char = match.group()
    if char in _ENTITIES:
        return _ENTITIES[char]
    return "\\" + char if char in _BACKSLASHED else " "


def _escape_chars(text: str) -> str:
    if text.isascii():  # the common case, by regex: the same result as the loop below
        return _ASCII_SPECIAL.sub(_escape_ascii, text)
    out = []
    for char in text:
        if char in _ENTITIES:
            out.append(_ENTITIES[char])
        elif char in _BACKSLASHED:
            out.append("\\" + char)
        elif unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") and char not in "\t":
            out.append(" ")
        else:
            out.append(char)
    return "".join(out)


def _escape_line_start(line: str) -> str:
    match = _BLOCK_START.match(line)
    if match is None:
        return line
    end = match.end()
    return line[: end - 1] + "\\" + line[end - 1:]


def escape_inline(text: str) -> str:
    """Untrusted text as one line of literal Markdown (headings, table cells, link text)."""
    return _escape_line_start(_escape_chars(" ".join(str(text).split())))


def escape_block(text: str) -> str:
    """Untrusted, possibly multi-line text as literal Markdown paragraphs.

    Lines are stripped (no indented code), blank lines separate paragraphs and every line
    is escaped so it cannot start a block of its own.
    """
    paragraphs: list[list[str]] = [[]]
    for raw in str(text).splitlines():
        line = " ".join(raw.split())
        if not line:
            if paragraphs[-1]:
                paragraphs.append([])
            continue
        paragraphs[-1].append(_escape_line_start(_escape_chars(line)))
    return "\n\n".join("\n".join(p) for p in paragraphs if p)


def code_span(text: str) -> str:
    """`text` as an inline code span (for trusted, generated text such as paths)."""
    if "`" in text or "\n" in text:
        raise MarkdownCheckError(f"cannot put {text!r} in a code span")
    return f"`{text}`"


@functools.cache
def parser(*, html: bool = False) -> MarkdownIt:
    """CommonMark plus GFM tables, the dialect the documents are written in.

    markdown-it-py is imported here, on the first parse, not with this module: the hook's
    fast path (`join_with_toc`) parses nothing for the documents the builders write, and a
    sandbox worker that loads the plugin at every start need not import (and compile)
    markdown-it-py for it."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": html}).enable(["table", "strikethrough"])


class Slugger:
    """GitHub heading anchors: lower-case, punctuation dropped, spaces to `-`, and repeated
    anchors suffixed `-1`, `-2`, ... (the algorithm of github-slugger)."""

    def __init__(self) -> None:
        self._occurrences: dict[str, int] = {}

    @staticmethod
    def slug(text: str) -> str:
        kept = (
            char
            for char in text.lower()
            if char in "-_ " or char.isalnum() or unicodedata.category(char).startswith("M")
        )
        return "".join(kept).replace(" ", "-")

    def unique(self, text: str) -> str:
        original = result = self.slug(text)
        while result in self._occurrences:
            self._occurrences[original] += 1
            result = f"{original}-{self._occurrences[original]}"
        self._occurrences[result] = 0
        return result


@dataclasses.dataclass(frozen=True)
class Heading:
    level: int
    text: str
    anchor: str


def inline_text(token: Token) -> str:
    """The text content of an inline token, as a browser would show it."""
    parts: list[str] = []
    for child in token.children or ():
        if child.type in ("text", "code_inline", "text_special"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
        elif child.type == "image":
            parts.append(inline_text(child))
    return "".join(parts)


def headings(markdown: str) -> list[Heading]:
    """Every heading of `markdown`, in order, with its GitHub anchor."""
    tokens = parser().parse(markdown)
    slugger = Slugger()
    found = []
    for index, token in enumerate(tokens):
        if token.type == "heading_open":
            text = inline_text(tokens[index + 1])
            found.append(Heading(int(token.tag[1:]), text, slugger.unique(text)))
    return found


def insert_toc(head: str, rest: str, *, levels: Iterable[int] = (2, 3)) -> str:
    """`head`, a table of contents of the headings of `rest`, then `rest`.

    `head` should end with the TOC's own heading (e.g. `## Contents`). The anchors are
    computed over the whole document, so headings in `head` count for duplicates.
    """
    wanted = set(levels)
    skip = len(headings(head))
    entries = [h for h in headings(f"{head}\n\n{rest}")[skip:] if h.level in wanted]
    if not entries:
        return f"{head}\n\n{rest}"
    top = min(h.level for h in entries)
    lines = [f"{'  ' * (h.level - top)}- [{escape_inline(h.text)}](#{h.anchor})"
             for h in entries]
    return f"{head}\n\n" + "\n".join(lines) + f"\n\n{rest}"


#: An ATX heading line as the builders write it: 1-6 `#`, one space, the text.
_HEADING_LINE: Final = re.compile(r"(#{1,6}) ([^\n]*)")
#: Inline Markdown whose rendered text is known without parsing: plain characters that
#: start no inline structure, backslash escapes of ASCII punctuation and the three
#: entities `escape_inline` writes. Anything else is left to markdown-it.
_SIMPLE_INLINE: Final = re.compile(
    r"(?:[^\\&`*_\[\]<!~#\x00-\x1f\x7f]|\\[!-/:-@\[-`{-~]|&(?:amp|lt|gt);)*")
_UNESCAPE: Final = re.compile(r"\\([!-/:-@\[-`{-~])|&(amp|lt|gt);")
#: The opening line of a fence as the builders write it.
_FENCE_OPEN: Final = re.compile(r"```[^`~\n]*\n")
#: A line that could open or close a fence.
_FENCE_LINE: Final = re.compile(r"^ {0,3}(?:`{3,}|~{3,})", re.M)
#: A line that could be (or start) a heading, a fence, indented code or an HTML block,
#: after any list or block-quote markers.
_RISKY_LINE: Final = re.compile(
    r"^[ \t>*+\-0-9.)]*(?:#|=+[ \t]*$|-+[ \t]*$|`{3,}|~{3,}|<)|^(?: {4}|\t)", re.M)
_ENTITY_CHARS: Final = {"amp": "&", "lt": "<", "gt": ">"}
#: Unicode categories markdown-it may treat differently from plain text (`escape_inline`
#: turns them into spaces, so a heading with one can have odd spacing): left to markdown-it.
_ODD_CATEGORIES: Final = frozenset({"Cc", "Cf", "Zl", "Zp", "Zs", "Cs", "Co", "Cn"})


def _unescape(match: re.Match[str]) -> str:
    char = match.group(1)
    return char if char is not None else _ENTITY_CHARS[match.group(2)]


@functools.lru_cache(maxsize=1024)
def _parsed_heading(line: str) -> tuple[int, str] | None:
    tokens = parser().parse(line)
    if len(tokens) != 3 or tokens[0].type != "heading_open":
        return None
    return int(tokens[0].tag[1:]), inline_text(tokens[1])


def heading_line(block: str) -> tuple[int, str] | None:
    """`(level, text)` if `block` is one ATX heading line, as markdown-it would read it
    (`text` as `inline_text` gives it), else None.

    The text is computed without parsing when it only holds plain characters, backslash
    escapes and `&amp;`/`&lt;`/`&gt;` (always the case for what `escape_inline` writes
    from printable text); any other heading line is parsed with markdown-it (cached).
    """
    match = _HEADING_LINE.fullmatch(block)
    if match is None:
        return None
    text = match.group(2)
    if (text == text.strip(" ") and "  " not in text and _SIMPLE_INLINE.fullmatch(text)
            and (text.isascii() or not any(unicodedata.category(char) in _ODD_CATEGORIES
                                           for char in text if char != " "
                                           and not char.isascii()))):
        return len(match.group(1)), _UNESCAPE.sub(_unescape, text)
    return _parsed_heading(block)


def _simple_block(block: str) -> bool:
    """True if `block` certainly holds no heading and ends where it ends: a fence as the
    builders write it (opened by exactly three backticks on the first line, closed on the
    last, no fence line in between), or text none of whose lines could open a heading
    (ATX, even inside a list item or block quote, or setext), a fence, indented code or
    an HTML block. Conservative: a False only sends the document to the slow path."""
    if block.startswith("```"):
        opening = _FENCE_OPEN.match(block)
        return (opening is not None and block.endswith("\n```")
                and _FENCE_LINE.search(block, opening.end(), len(block) - 4) is None)
    return _RISKY_LINE.search(block) is None


def join_with_toc(head: Sequence[str], rest: Sequence[str], *,
                  levels: Iterable[int] = (2, 3)) -> str:
    """Exactly `insert_toc("\n\n".join(head), "\n\n".join(rest), levels=levels)`.

    Every heading must be a block of its own (one ATX line, `heading_line`); the table of
    contents is built from those blocks, the anchors computed over the whole document, with
    no Markdown parse. If any block is not a heading line and not certainly free of
    headings (`_simple_block`), the document is handed to `insert_toc` instead.
    """
    found: list[tuple[int, str]] = []
    for block in (*head, *rest):
        heading = heading_line(block)
        if heading is not None:
            found.append(heading)
        elif not _simple_block(block):
            return insert_toc("\n\n".join(head), "\n\n".join(rest), levels=levels)
    slugger = Slugger()
    anchors = [slugger.unique(text) for _, text in found]
    wanted = set(levels)
    skip = sum(1 for block in head if heading_line(block) is not None)
    entries = [(level, text, anchor) for (level, text), anchor
               in zip(found[skip:], anchors[skip:], strict=True) if level in wanted]
    head_text = "\n\n".join(head)
    rest_text = "\n\n".join(rest)
    if not entries:
        return f"{head_text}\n\n{rest_text}"
    top = min(level for level, _, _ in entries)
    lines = [f"{'  ' * (level - top)}- [{escape_inline(text)}](#{anchor})"
             for level, text, anchor in entries]
    return f"{head_text}\n\n" + "\n".join(lines) + f"\n\n{rest_text}"


def _links(tokens: list[Token]) -> Iterable[str]:
    for token in tokens:
        for child in token.children or ():
            if child.type == "link_open":
                yield str(child.attrGet("href") or "")


def check_document(markdown: str, path: str, files: Collection[str]) -> None:
    """Raise `MarkdownCheckError` unless every link of `markdown` resolves and it has no
    raw HTML. `path` is the document's own path, `files` the paths of the project."""
    problems: list[str] = []
    anchors = {h.anchor for h in headings(markdown)}
    tokens = parser().parse(markdown)
    for href in _links(tokens):
        target, _, fragment = href.partition("#")
        if target == "":
            if fragment not in anchors:
                problems.append(f"link #{fragment} matches no heading")
        elif "://" not in target and not target.startswith("mailto:"):
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
            if resolved not in files:
                problems.append(f"link {target} points to no generated file")
    for token in parser(html=True).parse(markdown):
        kinds = [token.type, *(child.type for child in token.children or ())]
        if "html_block" in kinds or "html_inline" in kinds:
            problems.append(f"raw HTML on line {(token.map or [0])[0] + 1}")
    if problems:
        raise MarkdownCheckError(f"{path}: " + "; ".join(problems))
