"""The `preview` action: the generated README and API reference as sanitised HTML.

* `PREVIEW_INPUT_SCHEMA` is the action's input schema: `{"needs": <needs>}`, with the core's
  needs schema embedded (its `$defs` hoisted to the top level under a `needs-` prefix and
  every `$ref` rewritten), so the core answers malformed needs with a 422 whose pointers
  start with `/needs` before the plugin runs.
* `render_document` renders Markdown with markdown-it-py (CommonMark + GFM tables, raw
  HTML disabled), links limited to http(s), relative paths and `#anchors`, heading ids set
  to the GitHub anchors (prefixed `user-content-`, as GitHub does; in-document links
  follow), and lists the table of contents.
* `check_html` is a bug guard on the result: an allowlist of tags and attributes, no
  `<script`, no `on...=` attribute, no `javascript:` or other non-http(s) URL.
"""

from __future__ import annotations

import functools
import html
import json
import re
from collections.abc import Sequence
from html.parser import HTMLParser
from typing import Any, Final

from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml, unescapeAll
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict

from dihya_plugin_markdown_docs.markdown import Slugger, inline_text
from dihya_plugin_markdown_docs.schema import (  # noqa: F401  # re-exported
    PREVIEW_INPUT_SCHEMA,
    preview_input_schema,
)

#: Largest result the core accepts from an action (`dihya.web.api.MAX_ACTION_RESULT_BYTES`).
MAX_RESULT_CHARS: Final = 1024 * 1024
#: Prefix of heading ids in the HTML (GitHub's), so needs text cannot clobber page ids.
ID_PREFIX: Final = "user-content-"
#: Heading levels listed in the `toc` of the result (those of the documents' own TOCs).
TOC_LEVELS: Final = (2, 3)
_ALLOWED_SCHEMES: Final = frozenset({"http", "https"})
#: Everything up to the first `:` before any `/`, `?` or `#` is a URL scheme.
_SCHEME = re.compile(r"^([^/?#]*?):")
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]+")

#: Tags and attributes markdown-it can produce for CommonMark + tables with `html` off.
_ALLOWED_TAGS: Final = frozenset({
    "a", "blockquote", "br", "code", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "img",
    "li", "ol", "p", "pre", "strong", "table", "tbody", "td", "th", "thead", "tr", "ul",
})
_ALLOWED_ATTRS: Final = frozenset({"alt", "class", "href", "id", "src", "start", "style",
                                   "title"})
_URL_ATTRS: Final = frozenset({"href", "src"})
_STYLE = re.compile(r"^text-align:(left|right|center)$")


class UnsafeHtmlError(ValueError):
    """The rendered preview is not inert (a bug guard: this should never happen)."""


# --------------------------------------------------------------------------- input schema




# --------------------------------------------------------------------------- links


def safe_link(url: str) -> bool:
    """True for http(s) URLs, scheme-less (relative) URLs and `#anchors`, else False.

    Control characters and spaces are removed before looking for the scheme, as browsers
    do, so `java\\tscript:` is a scheme too (and refused).
    """
    match = _SCHEME.match(_CONTROL_OR_SPACE.sub("", html.unescape(url)))
    return match is None or match.group(1).lower() in _ALLOWED_SCHEMES


class _SafeMarkdownIt(MarkdownIt):
    def validateLink(self, url: str) -> bool:
        return super().validateLink(url) and safe_link(url)


_TEXT_ENTITIES: Final = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_TEXT_SPECIAL = re.compile("[&<>]")


def escape_text(text: str) -> str:
    """`text` escaped for element content: `&`, `<` and `>` (quotes need no escaping
    outside attributes, and leaving them keeps JSON examples readable and small)."""
    return _TEXT_SPECIAL.sub(lambda m: _TEXT_ENTITIES[m.group()], text)


def _text(renderer: RendererHTML, tokens: Sequence[Token], idx: int,
          options: OptionsDict, env: EnvType) -> str:
    return escape_text(tokens[idx].content)


def _code_inline(renderer: RendererHTML, tokens: Sequence[Token], idx: int,
                 options: OptionsDict, env: EnvType) -> str:
    return f"<code>{escape_text(tokens[idx].content)}</code>"


def _code_block(renderer: RendererHTML, tokens: Sequence[Token], idx: int,
                options: OptionsDict, env: EnvType) -> str:
    return f"<pre><code>{escape_text(tokens[idx].content)}</code></pre>\n"


def _fence(renderer: RendererHTML, tokens: Sequence[Token], idx: int,
           options: OptionsDict, env: EnvType) -> str:
    token = tokens[idx]
    info = unescapeAll(token.info).strip()
    lang = info.split(maxsplit=1)[0] if info else ""
    klass = f' class="{escapeHtml(options.langPrefix + lang)}"' if lang else ""
    return f"<pre><code{klass}>{escape_text(token.content)}</code></pre>\n"


@functools.cache
def html_parser() -> MarkdownIt:
    """CommonMark + GFM tables (the documents' dialect), raw HTML off, safe links."""
    md = _SafeMarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])
    for name, rule in (("text", _text), ("code_inline", _code_inline),
                       ("code_block", _code_block), ("fence", _fence)):
        md.add_render_rule(name, rule)
    return md


def render_document(markdown: str) -> tuple[str, list[dict[str, Any]]]:
    """`markdown` as sanitised HTML (checked by `check_html`) and its table of contents.

    Headings get `id="user-content-<GitHub anchor>"` and in-document links `#<anchor>`
    become `#user-content-<anchor>`. The TOC lists the headings of levels 2 and 3 after
    the document's own `Contents` heading, as the Markdown TOC does.
    """
    md = html_parser()
    tokens = md.parse(markdown)
    slugger = Slugger()
    toc: list[dict[str, Any]] = []
    listing = False
    for index, token in enumerate(tokens):
        if token.type == "heading_open":
            text = inline_text(tokens[index + 1])
            anchor = slugger.unique(text)
            token.attrSet("id", ID_PREFIX + anchor)
            level = int(token.tag[1:])
            if listing and level in TOC_LEVELS:
                toc.append({"level": level, "text": text, "anchor": anchor,
                            "id": ID_PREFIX + anchor})
            listing = listing or (level == 2 and text == "Contents")
        for child in token.children or ():
            href = child.attrGet("href") if child.type == "link_open" else None
            if isinstance(href, str) and href.startswith("#"):
                child.attrSet("href", "#" + ID_PREFIX + href[1:])
    out = md.renderer.render(tokens, md.options, {})
    check_html(out)
    return out, toc


# --------------------------------------------------------------------------- bug guard


class _Inspector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _ALLOWED_TAGS:
            self.problems.append(f"tag <{tag}>")
        for name, value in attrs:
            text = value or ""
            if name.startswith("on") or name not in _ALLOWED_ATTRS:
                self.problems.append(f"attribute {name}= on <{tag}>")
            elif name in _URL_ATTRS and not safe_link(text):
                self.problems.append(f"URL {text[:40]!r} in <{tag} {name}>")
            elif name == "style" and not _STYLE.match(text):
                self.problems.append(f"style {text[:40]!r} on <{tag}>")
            elif "javascript:" in _CONTROL_OR_SPACE.sub("", text).lower():
                self.problems.append(f"javascript: in <{tag} {name}>")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_comment(self, data: str) -> None:
        self.problems.append("HTML comment")

    def handle_decl(self, decl: str) -> None:
        self.problems.append("declaration")

    def handle_pi(self, data: str) -> None:
        self.problems.append("processing instruction")

    def unknown_decl(self, data: str) -> None:
        self.problems.append("declaration")


def check_html(text: str) -> None:
    """Raise `UnsafeHtmlError` unless `text` is inert HTML of the allowed tags."""
    problems = []
    if "<script" in text.lower():
        problems.append("<script")
    inspector = _Inspector()
    inspector.feed(text)
    inspector.close()
    problems += inspector.problems
    if problems:
        raise UnsafeHtmlError("unsafe preview HTML: " + "; ".join(sorted(set(problems))))


# --------------------------------------------------------------------------- result


class PreviewTooLargeError(ValueError):
    """The preview does not fit in an action's result (1 MiB of JSON)."""


def preview_result(docs: dict[str, str], paths: Sequence[str]) -> dict[str, Any]:
    """The action's result for the generated Markdown `docs` (path -> text)."""
    rendered = {path: render_document(docs[path]) for path in paths}
    result = {
        "files": {path: html_text for path, (html_text, _) in rendered.items()},
        "toc": {path: toc for path, (_, toc) in rendered.items()},
    }
    size = len(json.dumps(result, allow_nan=False))
    if size > MAX_RESULT_CHARS:
        raise PreviewTooLargeError(
            f"the preview is {size} characters of JSON, more than an action may return "
            f"({MAX_RESULT_CHARS}); preview fewer entities or shorter descriptions")
    return result
