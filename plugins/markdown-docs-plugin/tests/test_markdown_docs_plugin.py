"""Tests of the markdown-docs plugin: files, coverage, TOC anchors, escaping, validity."""

from __future__ import annotations

import copy
import json
import re
from importlib import metadata
from typing import Any

import pytest
from dihya import (
    GenerationPluginBase,
    collection_path,
    implemented_hooks,
    validate_code,
    validate_needs,
    validate_plugin_class,
)
from markdown_it import MarkdownIt

from dihya_plugin_markdown_docs import MarkdownCheckError, MarkdownDocsPlugin
from dihya_plugin_markdown_docs.docs import example_object, example_value
from dihya_plugin_markdown_docs.markdown import (
    Slugger,
    check_document,
    escape_block,
    escape_inline,
    headings,
    inline_text,
)

HOSTILE = "<script>alert(1)</script> | # x"
MD = MarkdownIt("commonmark", {"html": True}).enable("table")


def run(code: dict[str, str], needs: dict[str, Any]) -> dict[str, str]:
    return MarkdownDocsPlugin().after_generation(code, needs)


def section(markdown: str, heading: str) -> str:
    """The text from `heading` (a full heading line) up to the next heading of its level."""
    level = len(heading) - len(heading.lstrip("#"))
    start = markdown.index(f"\n{heading}\n")
    end = re.search(rf"\n#{{1,{level}}} ", markdown[start + 1:])
    return markdown[start: start + 1 + end.start()] if end else markdown[start:]


# ------------------------------------------------------------------ contract and packaging


def test_metadata_and_contract() -> None:
    assert issubclass(MarkdownDocsPlugin, GenerationPluginBase)
    assert MarkdownDocsPlugin.safe is True
    assert MarkdownDocsPlugin.priority == 50
    assert MarkdownDocsPlugin.version == "1.1.3"
    assert validate_plugin_class(MarkdownDocsPlugin, "markdown-docs") is MarkdownDocsPlugin
    assert implemented_hooks(MarkdownDocsPlugin) == ("after_generation",)


def test_entry_point_is_declared() -> None:
    eps = metadata.entry_points(group="dihya.generation_plugins")
    matches = [ep for ep in eps if ep.name == "markdown-docs"]
    if not matches:
        pytest.skip("dihya-plugin-markdown-docs is not installed as a distribution")
    assert matches[0].value == "dihya_plugin_markdown_docs:MarkdownDocsPlugin"
    assert matches[0].load() is MarkdownDocsPlugin


def test_fixture_needs_are_valid(needs: dict[str, Any]) -> None:
    assert validate_needs(needs) == []


# ------------------------------------------------------------------ files


def test_files_appear_and_others_are_kept(code: dict[str, str], needs: dict[str, Any]) -> None:
    before = dict(code)
    out = run(code, needs)
    assert code == before
    assert set(out) == {*code, "docs/API.md"}
    assert out["README.md"] != code["README.md"]  # overwritten
    for path in code:
        if path != "README.md":
            assert out[path] == code[path]


def test_outputs_validate(code: dict[str, str], needs: dict[str, Any]) -> None:
    assert validate_code(run(code, needs)) == []
    assert validate_code(run({}, needs)) == []


def test_deterministic(code: dict[str, str], needs: dict[str, Any]) -> None:
    first = run(code, needs)
    assert run(dict(code), copy.deepcopy(needs)) == first
    assert run(first, needs) == first  # running again changes nothing


# ------------------------------------------------------------------ README


def test_readme_content(code: dict[str, str], needs: dict[str, Any]) -> None:
    readme = run(code, needs)["README.md"]
    assert readme.startswith("# Team todo list\n")
    assert needs["description"] in readme
    for line in ("python3 -m venv .venv", "pip install -r requirements.txt",
                 "flask --app wsgi run", "pytest"):
        assert f"\n{line}\n" in readme
    assert "[docs/API.md](docs/API.md)" in readme
    assert "## Contents" in readme


def test_readme_field_tables(code: dict[str, str], needs: dict[str, Any]) -> None:
    readme = run(code, needs)["README.md"]
    for entity in needs["entities"]:
        text = section(readme, f"### {escape_inline(entity['name'])}")
        assert f"`{collection_path(entity['name'])}`" in text
        rows = _table_rows(text)
        assert rows[0] == ["Field", "Type", "Required", "Default", "Description"]
        names = [row[0] for row in rows[1:]]
        assert names == ["id", *(f["name"] for f in entity["fields"])]
    task = {row[0]: row for row in _table_rows(section(readme, "### Task"))[1:]}
    assert task["title"] == ["title", "string (max 200)", "yes", "—", "What to do."]
    assert task["done"][1:4] == ["boolean", "no", "false"]
    assert task["priority"][3] == "3"
    assert task["notes"][1:3] == ["text", "no"]


# ------------------------------------------------------------------ API.md


def test_every_entity_and_endpoint_is_documented(
    code: dict[str, str], needs: dict[str, Any]
) -> None:
    api = run(code, needs)["docs/API.md"]
    assert "`GET /health`" in api and '"status": "ok"' in api
    for entity in needs["entities"]:
        path = collection_path(entity["name"])
        text = section(api, f"## {escape_inline(entity['name'])}")
        for route in (f"GET {path}?limit=50&offset=0", f"POST {path}", f"GET {path}/<id>",
                      f"PATCH {path}/<id>", f"DELETE {path}/<id>"):
            assert f"`{route}`" in text, route
        assert f"curl -s 'http://127.0.0.1:5000{path}?limit=50&offset=0'" in text
        assert f"-X POST http://127.0.0.1:5000{path} " in text
        assert f"-X PATCH http://127.0.0.1:5000{path}/1 " in text
        assert f"-X DELETE http://127.0.0.1:5000{path}/1\n" in text
        for status in ("200 OK", "201 Created", "204 No Content", "422 Unprocessable Entity"):
            assert f"HTTP/1.1 {status}" in text
        assert f"Location: {path}/1" in text
        bodies = [json.loads(b) for b in re.findall(r"\n\n(\{.*?\n\})\n```", text, re.S)]
        assert {"items": [example_object(entity)], "count": 1} in bodies
        assert example_object(entity) in bodies
    assert "/api/team_members" in api and "/api/boxes" in api


def test_error_shapes_are_documented(code: dict[str, str], needs: dict[str, Any]) -> None:
    api = run(code, needs)["docs/API.md"]
    errors = section(api, "## Errors")
    for shape in ('`{"error": "..."}`', '`{"error": "not found"}`',
                  '`{"errors": {"<field>": "<message>"}}`'):
        assert shape in errors
    for status in ("400", "404", "422"):
        assert f"`{status} " in errors


def test_curl_bodies_are_valid_json(code: dict[str, str], needs: dict[str, Any]) -> None:
    api = run(code, needs)["docs/API.md"]
    bodies = re.findall(r"-d '([^']*)'", api)
    assert len(bodies) == 2 * len(needs["entities"])
    for body in bodies:
        assert isinstance(json.loads(body), dict)
    task = json.loads(bodies[0])
    assert task == {k: v for k, v in example_object(needs["entities"][0]).items() if k != "id"}


def test_example_values_follow_types_and_max_length(needs: dict[str, Any]) -> None:
    task = example_object(needs["entities"][0])
    assert task == {
        "id": 1, "title": "example title", "notes": "example notes", "done": True,
        "priority": 1, "estimate_hours": 1.5, "due_on": "2026-01-31",
        "created_at": "2026-01-31T12:00:00",
    }
    assert example_value({"name": "code", "type": "string", "max_length": 4}) == "exam"
    assert example_value({"name": "x", "type": "string", "max_length": 1}) == "e"
    long_name = {"name": "a_very_long_name", "type": "string", "max_length": 10}
    assert len(example_value(long_name)) <= 10
    assert len(example_value(long_name, updated=True)) <= 10


# ------------------------------------------------------------------ TOC


@pytest.mark.parametrize("path", ["README.md", "docs/API.md"])
def test_toc_anchors_resolve(code: dict[str, str], needs: dict[str, Any], path: str) -> None:
    text = run(code, needs)[path]
    anchors = {h.anchor for h in headings(text)}
    toc = section(text, "## Contents")
    links = re.findall(r"\]\(#([^)]*)\)", toc)
    assert links, "empty table of contents"
    assert set(links) <= anchors
    listed = [h for h in headings(text) if h.level in (2, 3) and h.text != "Contents"]
    assert links == [h.anchor for h in listed]


def test_toc_with_duplicate_headings(code: dict[str, str]) -> None:
    needs = {
        "project": "dup", "stack": "flask-api",
        "entities": [
            {"name": "Health", "fields": [{"name": "x", "type": "integer"}]},
            {"name": "Entities", "fields": [{"name": "x", "type": "integer"}]},
            {"name": "Contents", "fields": [{"name": "x", "type": "integer"}]},
        ],
    }
    assert validate_needs(needs) == []
    out = run(code, needs)
    assert "- [Health](#health-1)" in out["docs/API.md"]
    assert "- [Contents](#contents-1)" in out["docs/API.md"]
    assert "  - [Entities](#entities-1)" in out["README.md"]


def test_slugger_matches_github() -> None:
    slugger = Slugger()
    assert slugger.unique("Quick start") == "quick-start"
    assert slugger.unique("Quick start") == "quick-start-1"
    assert slugger.unique("Quick start") == "quick-start-2"
    assert slugger.unique("Quick start-1") == "quick-start-1-1"
    assert Slugger.slug("GET /api/tasks — list!") == "get-apitasks--list"
    assert Slugger.slug("Team_Member's Café") == "team_members-café"


def test_check_document_rejects_broken_links() -> None:
    with pytest.raises(MarkdownCheckError, match="#nowhere matches no heading"):
        check_document("# A\n\n- [x](#nowhere)\n", "README.md", {"README.md"})
    with pytest.raises(MarkdownCheckError, match="points to no generated file"):
        check_document("# A\n\n[api](docs/API.md)\n", "README.md", {"README.md"})
    with pytest.raises(MarkdownCheckError, match="raw HTML"):
        check_document("# A\n\n<b>x</b>\n", "README.md", {"README.md"})
    check_document("# A\n\n[a](#a) [api](docs/API.md)\n", "README.md", {"docs/API.md"})


# ------------------------------------------------------------------ escaping


def _hostile_needs(needs: dict[str, Any]) -> dict[str, Any]:
    hostile = copy.deepcopy(needs)
    hostile["title"] = f"# {HOSTILE} ##"
    hostile["description"] = (f"{HOSTILE}\n    indented code?\n- list\n1. one\n===\n"
                              "```\n[link](javascript:alert(1)) *em* _em_ `code` &amp; ~~s~~")
    for entity in hostile["entities"]:
        entity["description"] = HOSTILE
        for field in entity["fields"]:
            field["description"] = f"{HOSTILE}\nsecond | line"
    hostile["entities"][2]["fields"][0]["default"] = "a|b<i>`c`"
    assert validate_needs(hostile) == []
    return hostile


@pytest.mark.parametrize("path", ["README.md", "docs/API.md"])
def test_hostile_text_is_escaped(code: dict[str, str], needs: dict[str, Any], path: str) -> None:
    text = run(code, _hostile_needs(needs))[path]
    assert "<script>" not in text and "<i>" not in text
    tokens = MD.parse(text)
    kinds = {t.type for t in tokens} | {c.type for t in tokens for c in t.children or ()}
    assert not kinds & {"html_block", "html_inline", "link_open", "em_open", "s_open"} - (
        {"link_open"} if "](#" in text else set())
    html = MD.render(text)
    assert "<script" not in html and "<i>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "javascript:" not in "".join(
        str(c.attrGet("href")) for t in tokens for c in t.children or ()
        if c.type == "link_open")
    # the title stays one h1 with the literal text
    h1 = [inline_text(tokens[i + 1]) for i, t in enumerate(tokens)
          if t.type == "heading_open" and t.tag == "h1"]
    assert len(h1) == 1 and h1[0].startswith(f"# {HOSTILE} ##")


def test_hostile_text_keeps_table_shape(code: dict[str, str], needs: dict[str, Any]) -> None:
    readme = run(code, _hostile_needs(needs))["README.md"]
    tokens = MD.parse(readme)
    rows: list[list[str]] = []
    for i, token in enumerate(tokens):
        if token.type == "tr_open":
            rows.append([])
        elif token.type in ("td_open", "th_open"):
            rows[-1].append(inline_text(tokens[i + 1]))
    assert rows and all(len(row) == 5 for row in rows)
    described = [row for row in rows if row[4].startswith(HOSTILE)]
    assert len(described) == sum(len(e["fields"]) for e in needs["entities"])
    assert described[0][4] == f"{HOSTILE} second | line"
    assert [row[3] for row in rows if row[0] == "label"] == ['"a|b<i>`c`"']
    # headings: only the ones the plugin writes
    texts = [h.text for h in headings(readme)]
    assert texts[0] == f"# {HOSTILE} ##"
    assert "x" not in texts


def test_escape_helpers() -> None:
    assert escape_inline("a <b> & c") == "a &lt;b&gt; &amp; c"
    assert escape_inline("a | b") == r"a \| b"
    assert escape_inline("`x`") == r"\`x\`"
    assert escape_inline("# h") == r"\# h"
    assert escape_inline("1. x") == r"1\. x"
    assert escape_inline("- x\n  y") == r"\- x y"
    assert escape_block("  # a\n\n\n    b") == "\\# a\n\nb"
    rendered = MD.render(escape_block(HOSTILE + "\n" + HOSTILE))
    assert rendered.count("<p>") == 1 and "<script" not in rendered


def _table_rows(markdown: str) -> list[list[str]]:
    tokens = MD.parse(markdown)
    rows: list[list[str]] = []
    for i, token in enumerate(tokens):
        if token.type == "tr_open":
            rows.append([])
        elif token.type in ("td_open", "th_open"):
            rows[-1].append(inline_text(tokens[i + 1]).strip())
    return rows
