"""Markdown helpers built on markdown-it-py: escaping, GitHub anchors, TOC and checks.

* `escape_inline` / `escape_block` turn untrusted text (from the needs) into Markdown that
  renders as that literal text: no HTML, no emphasis, no links, no headings, no tables.
* `Slugger` reproduces GitHub's heading anchors (github-slugger).
* `insert_toc` parses a document, lists its headings and writes a table of contents.
* `check_document` parses the result again and raises `MarkdownCheckError` when a TOC or
  in-document link does not resolve, a relative link points outside the generated files,
  or the document contains any raw HTML.
"""

from __future__ import annotations

import dataclasses
import functools
import posixpath
import re
import unicodedata
from collections.abc import Collection, Iterable
from typing import Final

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


def _escape_chars(text: str) -> str:
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
    """CommonMark plus GFM tables, the dialect the documents are written in."""
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
