"""Tests of the `preview` action: contract, content, sanitising, input schema and size."""

from __future__ import annotations

import copy
import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from dihya import (
    ActionSpec,
    NeedsError,
    collection_path,
    generate,
    plugin_actions,
    validate_needs,
    validate_plugin_class,
)
from markdown_it import MarkdownIt
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from dihya_plugin_markdown_docs import MarkdownDocsPlugin
from dihya_plugin_markdown_docs.preview import (
    ID_PREFIX,
    MAX_RESULT_CHARS,
    PREVIEW_INPUT_SCHEMA,
    PreviewTooLargeError,
    UnsafeHtmlError,
    check_html,
    html_parser,
    preview_result,
    render_document,
    safe_link,
)

PATHS = ("README.md", "docs/API.md")
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "needs" / "todo.json"
SCRIPT = "<script>alert(1)</script>"
JS_LINK = "[x](javascript:alert(1))"
IMG = "<img src=x onerror=alert(1)>"
QUOTES = "He said \"hi\" & it's <b>bold</b>"
HOSTILE = f"{SCRIPT} {JS_LINK} {IMG} {QUOTES}"
VALIDATOR = jsonschema.Draft202012Validator(PREVIEW_INPUT_SCHEMA)


def preview(needs: dict[str, Any]) -> dict[str, Any]:
    return MarkdownDocsPlugin().preview({"needs": copy.deepcopy(needs)})


class _Html(HTMLParser):
    """Collects the tags, attributes and text of an HTML document."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def attr_values(self, name: str) -> list[str]:
        return [attrs[name] for _, attrs in self.tags if name in attrs]


def assert_inert(text: str) -> _Html:
    doc = _Html(text)
    assert "<script" not in text.lower()
    tags = {tag for tag, _ in doc.tags}
    assert not tags & {"script", "img", "iframe", "object", "embed", "style", "b", "svg"}
    for tag, attrs in doc.tags:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        for name in ("href", "src"):
            if name in attrs:
                assert safe_link(attrs[name]), (tag, attrs)
                assert "javascript:" not in attrs[name].lower()
    return doc


# ------------------------------------------------------------------ contract


def test_action_is_declared() -> None:
    actions = plugin_actions(MarkdownDocsPlugin)
    assert list(actions) == ["preview"]
    spec = actions["preview"]
    assert spec == ActionSpec(
        "preview", "preview",
        "Render the README and API docs this plugin would generate, as sanitised HTML",
        PREVIEW_INPUT_SCHEMA)
    assert json.loads(json.dumps(spec.to_json()))["input_schema"] == PREVIEW_INPUT_SCHEMA


def test_plugin_class_is_valid() -> None:
    assert validate_plugin_class(MarkdownDocsPlugin, "markdown-docs") is MarkdownDocsPlugin
    jsonschema.Draft202012Validator.check_schema(PREVIEW_INPUT_SCHEMA)
    assert MarkdownDocsPlugin.version == "1.1.3"


# ------------------------------------------------------------------ content


def _check_content(needs: dict[str, Any]) -> None:
    result = preview(needs)
    assert set(result) == {"files", "toc"}
    assert list(result["files"]) == list(PATHS) == list(result["toc"])
    readme, api = (result["files"][p] for p in PATHS)
    for entity in needs["entities"]:
        name, path = entity["name"], collection_path(entity["name"])
        assert f">{name}</h3>" in readme
        assert f"<code>{path}</code>" in readme
        assert f">{name}</h2>" in api
        for route in (f"GET {path}?limit=50&amp;offset=0", f"POST {path}",
                      f"GET {path}/&lt;id&gt;", f"PATCH {path}/&lt;id&gt;",
                      f"DELETE {path}/&lt;id&gt;"):
            assert f"<code>{route}</code>" in api, route
        for field in entity["fields"]:
            assert f"<code>{field['name']}</code>" in readme
            assert f"<code>{field['name']}</code>" in api
    assert "<code>GET /health</code>" in api
    for path in PATHS:
        assert_inert(result["files"][path])


def test_preview_covers_every_entity_and_endpoint(needs: dict[str, Any]) -> None:
    _check_content(needs)


def test_preview_of_the_example_needs() -> None:
    if not EXAMPLE.is_file():
        pytest.skip("examples/needs/todo.json is not next to the plugin")
    _check_content(json.loads(EXAMPLE.read_text("utf-8")))


def test_preview_is_what_a_generation_adds(needs: dict[str, Any]) -> None:
    docs = MarkdownDocsPlugin().after_generation(generate(needs), needs)
    result = preview(needs)
    for path in PATHS:
        assert result["files"][path] == render_document(docs[path])[0]


def test_toc_matches_heading_ids(needs: dict[str, Any]) -> None:
    result = preview(needs)
    for path in PATHS:
        doc = _Html(result["files"][path])
        ids = doc.attr_values("id")
        assert len(ids) == len(set(ids))
        toc = result["toc"][path]
        assert toc and toc[0]["text"] != "Contents"
        for entry in toc:
            assert entry["level"] in (2, 3)
            assert entry["id"] == ID_PREFIX + entry["anchor"] and entry["id"] in ids
        # the document's own TOC links to the same headings, and every #link resolves
        fragments = [h[1:] for h in doc.attr_values("href") if h.startswith("#")]
        assert fragments[: len(toc)] == [entry["id"] for entry in toc]
        assert set(fragments) <= set(ids)
    readme_toc = [e["text"] for e in result["toc"]["README.md"]]
    assert readme_toc == ["Quick start", "Entities", "Task", "TeamMember", "Box",
                          "API reference"]


# ------------------------------------------------------------------ sanitising


def _hostile(needs: dict[str, Any]) -> dict[str, Any]:
    hostile = copy.deepcopy(needs)
    hostile["title"] = HOSTILE
    hostile["description"] = f"{HOSTILE}\n\n{SCRIPT}\n{JS_LINK}\n{IMG}\n{QUOTES}"
    for entity in hostile["entities"]:
        entity["description"] = HOSTILE
        for field in entity["fields"]:
            field["description"] = HOSTILE
    hostile["entities"][2]["fields"][0]["default"] = f"{IMG}\"'"
    assert validate_needs(hostile) == []
    return hostile


@pytest.mark.parametrize("path", PATHS)
def test_hostile_needs_render_escaped_and_inert(needs: dict[str, Any], path: str) -> None:
    text = preview(_hostile(needs))["files"][path]
    doc = assert_inert(text)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "&lt;b&gt;bold&lt;/b&gt;" in text
    visible = "".join(doc.text)
    assert HOSTILE in visible  # shown literally, as text
    # the only links are the plugin's own: anchors and the other document
    assert {h for h in doc.attr_values("href") if not h.startswith("#")} <= {
        "docs/API.md", "../README.md"}
    if path == "README.md":
        assert json.dumps(f"{IMG}\"'") in visible  # the default, quotes and all


@pytest.mark.parametrize("source", [
    "[a](javascript:alert(1))",
    "[a](JaVaScRiPt:alert(1))",
    "[a](javascript&#58;alert(1))",
    "[a](&#106;avascript:alert(1))",
    "[a](<java\tscript:alert(1)>)",
    "<javascript:alert(1)>",
    "[a](vbscript:msgbox(1))",
    "[a](data:text/html;base64,PHNjcmlwdD4=)",
    "![a](data:image/png;base64,iVBORw0KGgo=)",
    "[a](file:///etc/passwd)",
    "[a](mailto:someone@example.com)",
    "[a][r]\n\n[r]: javascript:alert(1)",
])
def test_unsafe_links_are_dropped(source: str) -> None:
    text = html_parser().render(source)
    check_html(text)
    assert "<a " not in text and "<img" not in text
    assert_inert(text)


def test_markdown_it_alone_lets_data_images_through() -> None:
    # Why `validateLink` is hardened: markdown-it's own check allows data: images.
    assert 'src="data:image/png' in MarkdownIt("commonmark").render(
        "![a](data:image/png;base64,iVBORw0KGgo=)")


@pytest.mark.parametrize(("source", "href"), [
    ("[a](https://example.com/x?y=1)", "https://example.com/x?y=1"),
    ("[a](http://example.com)", "http://example.com"),
    ("[a](docs/API.md)", "docs/API.md"),
    ("[a](../README.md#top)", "../README.md#top"),
    ("[a](#quick-start)", f"#{ID_PREFIX}quick-start"),
    ("<https://example.com>", "https://example.com"),
])
def test_safe_links_are_kept(source: str, href: str) -> None:
    text, _ = render_document(source)
    assert _Html(text).attr_values("href") == [href]


def test_raw_html_is_disabled() -> None:
    text, _ = render_document(f"{SCRIPT}\n\npara {IMG} <a href='javascript:x'>y</a>")
    assert_inert(text)
    assert "&lt;script&gt;" in text and "&lt;a href='javascript:x'&gt;" in text


@pytest.mark.parametrize("bad", [
    "<script>alert(1)</script>",
    "<SCRIPT src=x></SCRIPT>",
    '<p onclick="alert(1)">x</p>',
    "<img src=x onerror=alert(1)>",
    '<a href="javascript:alert(1)">x</a>',
    '<a href=" java\tscript:alert(1)">x</a>',
    '<a href="&#106;avascript:alert(1)">x</a>',
    '<a title="javascript:alert(1)">x</a>',
    "<iframe src=https://example.com></iframe>",
    '<td style="background:url(x)">x</td>',
    "<!-- x -->",
])
def test_bug_guard_rejects_unsafe_html(bad: str) -> None:
    with pytest.raises(UnsafeHtmlError):
        check_html(f"<p>ok</p>\n{bad}")


def test_bug_guard_accepts_inert_text() -> None:
    check_html('<p>javascript:alert(1) onerror=x &lt;script&gt;</p>\n'
               '<td style="text-align:right"><a href="#user-content-a">a</a></td>')


# ------------------------------------------------------------------ input schema


def _errors(body: object) -> list[tuple[tuple[object, ...], str]]:
    return sorted(((tuple(e.absolute_path), e.validator) for e in VALIDATOR.iter_errors(body)),
                  key=str)


def test_input_schema_accepts_valid_needs(needs: dict[str, Any]) -> None:
    assert _errors({"needs": needs}) == []
    if EXAMPLE.is_file():
        assert _errors({"needs": json.loads(EXAMPLE.read_text("utf-8"))}) == []


def test_input_schema_refs_resolve() -> None:
    refs: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            refs.extend(v for k, v in node.items() if k == "$ref")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(PREVIEW_INPUT_SCHEMA)
    assert refs
    for ref in refs:
        assert ref.startswith("#/$defs/")
        assert ref.removeprefix("#/$defs/") in PREVIEW_INPUT_SCHEMA["$defs"]
    # every ref resolves with the `referencing` library jsonschema uses
    resource = DRAFT202012.create_resource(PREVIEW_INPUT_SCHEMA)
    resolver = Registry().with_resource("urn:preview", resource).resolver("urn:preview")
    for ref in refs:
        assert isinstance(resolver.lookup(ref).contents, dict)


def test_input_schema_rejects_a_body_without_needs() -> None:
    assert _errors({}) == [((), "required")]
    assert ((), "additionalProperties") in _errors({"needs": {}, "extra": 1})
    assert _errors({"needs": "todo"}) == [(("needs",), "type")]
    assert _errors([]) == [((), "type")]


def test_input_schema_points_into_the_needs(needs: dict[str, Any]) -> None:
    bad = copy.deepcopy(needs)
    bad["project"] = "Not A Slug"
    bad["stack"] = "rails"
    bad["unknown"] = 1
    bad["entities"][0]["name"] = "1st"  # checked through $ref entity -> $ref identifier
    bad["entities"][0]["fields"][1]["type"] = "blob"  # through $ref field
    bad["entities"][1]["fields"][0]["oops"] = True
    bad["entities"][2]["fields"] = []
    assert _errors({"needs": bad}) == sorted([
        (("needs",), "additionalProperties"),
        (("needs", "entities", 0, "fields", 1, "type"), "enum"),
        (("needs", "entities", 0, "name"), "pattern"),
        (("needs", "entities", 1, "fields", 0), "additionalProperties"),
        (("needs", "entities", 2, "fields"), "minItems"),
        (("needs", "project"), "pattern"),
        (("needs", "stack"), "enum"),
    ], key=str)


def test_core_answers_bad_needs_with_pointers(needs: dict[str, Any]) -> None:
    from dihya.testing import action_input_problems

    bad = copy.deepcopy(needs)
    bad["entities"][0]["fields"][0]["name"] = "has space"
    problems = action_input_problems(MarkdownDocsPlugin, "preview", {"needs": bad})
    assert [e["pointer"] for e in problems] == ["/needs/entities/0/fields/0/name"]
    assert action_input_problems(MarkdownDocsPlugin, "preview", {"needs": needs}) == []


def test_semantic_problems_raise_needs_error(needs: dict[str, Any]) -> None:
    dup = copy.deepcopy(needs)
    dup["entities"][1]["name"] = "task"  # passes the schema, fails check_needs
    assert _errors({"needs": dup}) == []
    with pytest.raises(NeedsError, match="declared twice"):
        preview(dup)


# ------------------------------------------------------------------ size


def test_result_is_json_and_small_for_100_entities_of_10_fields() -> None:
    types = ["string", "text", "integer", "float", "boolean", "date", "datetime"]
    needs = {
        "project": "big", "title": "A big project", "stack": "flask-api",
        "description": "Many entities. " * 10,
        "entities": [
            {"name": f"Entity{i}", "description": f"Entity number {i}.",
             "fields": [{"name": f"field_{j}", "type": types[j % len(types)],
                         "required": j == 0, "description": f"Field {j} of entity {i}."}
                        for j in range(10)]}
            for i in range(100)
        ],
    }
    assert validate_needs(needs) == []
    result = preview(needs)
    text = json.dumps(result, allow_nan=False)  # as the core serialises it
    assert json.loads(text) == result
    assert len(text) <= MAX_RESULT_CHARS
    # Conventions, Errors, Health, Check health, then 100 x (entity + 5 endpoints)
    assert len(result["toc"]["docs/API.md"]) == 4 + 100 * 6


def test_oversized_preview_is_refused_clearly() -> None:
    with pytest.raises(PreviewTooLargeError, match="more than an action may return"):
        preview_result({"README.md": "# T\n\n" + "word " * 250_000}, ["README.md"])
