"""The fast table of contents (1.1.1) writes exactly what the markdown-it path wrote.

`after_generation` no longer parses its documents: `join_with_toc` builds the tables of
contents from the heading blocks the builders emit. These tests prove the output is
byte-identical to 1.1.0's, which built and checked them with markdown-it:

* fixtures: the documents 1.1.0 wrote for `examples/needs/todo.json` (kept in full under
  `fixtures/todo/`) and for 100 entities of 10 fields (kept as SHA-256 digests: 450 KB);
* a reference path: the same builders with the markdown-it `insert_toc`, then
  `check_document`, on valid, hostile, duplicate-heading and random needs;
* the pieces: `heading_line` against markdown-it on many heading texts, and
  `join_with_toc` against `insert_toc` on random documents of tricky blocks;
* the fast path is taken (no markdown-it parse) for valid needs with printable text.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from dihya import generate, validate_needs

from dihya_plugin_markdown_docs import MarkdownDocsPlugin, docs, markdown
from dihya_plugin_markdown_docs.markdown import (
    Slugger,
    check_document,
    escape_block,
    escape_inline,
    heading_line,
    headings,
    insert_toc,
    join_with_toc,
)
from dihya_plugin_markdown_docs.plugin import DOC_PATHS, document

FIXTURES = Path(__file__).parent / "fixtures"
PATHS = ("README.md", "docs/API.md")
#: What 1.1.0 wrote for `big_needs()`: (length, SHA-256) of README.md and docs/API.md.
BIG_EXPECTED = {
    "README.md": (84026, "48a5571f0a9f2349cb224ca3dcd016c0fda8c9b58ac0024f3653502c1cbf5ee3"),
    "docs/API.md": (378547,
                    "8d6a87465a5bd2674688dedd19493d20da038c8bc663f3d14ead372e5633e5aa"),
}
TYPES = ["string", "text", "integer", "float", "boolean", "date", "datetime"]
HOSTILE = "<script>alert(1)</script> | # x"


def big_needs(entities: int = 100, fields: int = 10) -> dict[str, Any]:
    return {
        "project": "big", "title": "A big project", "stack": "flask-api",
        "description": "Many entities. " * 10,
        "entities": [
            {"name": f"Entity{i}", "description": f"Entity number {i}.",
             "fields": [{"name": f"field_{j}", "type": TYPES[j % len(TYPES)],
                         "required": j == 0, "description": f"Field {j} of entity {i}."}
                        for j in range(fields)]}
            for i in range(entities)
        ],
    }


def reference(code: dict[str, str], needs: dict[str, Any],
              monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The documents as 1.1.0 built them: TOC from a markdown-it parse, then checked."""
    with monkeypatch.context() as patch:
        patch.setattr(docs, "join_with_toc", lambda head, rest: insert_toc(
            "\n\n".join(head), "\n\n".join(rest)))
        return document(code, needs, check=True)


def fast(code: dict[str, str], needs: dict[str, Any]) -> dict[str, str]:
    return MarkdownDocsPlugin().after_generation(code, needs)


@pytest.fixture
def no_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail if anything parses Markdown (the fast path must not)."""
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("markdown-it was used on the fast path")
    monkeypatch.setattr(markdown, "parser", refuse)
    monkeypatch.setattr(markdown, "insert_toc", refuse)


# ------------------------------------------------------------------ fixtures of 1.1.0


def test_todo_example_is_byte_identical_to_1_1_0(no_parse: None) -> None:
    needs = json.loads((FIXTURES / "todo" / "needs.json").read_text("utf-8"))
    out = fast(generate(needs), needs)
    assert out["README.md"] == (FIXTURES / "todo" / "README.md.expected").read_text("utf-8")
    assert out["docs/API.md"] == (FIXTURES / "todo" / "API.md.expected").read_text("utf-8")


def test_100_entities_of_10_fields_are_byte_identical_to_1_1_0(no_parse: None) -> None:
    needs = big_needs()
    assert validate_needs(needs) == []
    out = fast({}, needs)
    for path, (length, digest) in BIG_EXPECTED.items():
        assert len(out[path]) == length
        assert hashlib.sha256(out[path].encode("utf-8")).hexdigest() == digest


# ------------------------------------------------------------------ against the reference


def _hostile(needs: dict[str, Any]) -> dict[str, Any]:
    hostile = copy.deepcopy(needs)
    hostile["title"] = f"# {HOSTILE} ## \u00a0Quick start\u200b \\#"
    hostile["description"] = (f"{HOSTILE}\n    indented code?\n- list\n1. one\n===\n---\n"
                              "```\n~~~\n[link](javascript:alert(1)) *em* _em_ `code` "
                              "&amp; ~~s~~\n> quote\n## not a heading\n<div>")
    for entity in hostile["entities"]:
        entity["description"] = HOSTILE + "\n\n```\n\n# heading?"
        for field in entity["fields"]:
            field["description"] = f"{HOSTILE}\nsecond | line"
    hostile["entities"][-1]["fields"][0]["default"] = "a|b<i>`c`"
    assert validate_needs(hostile) == []
    return hostile


def _duplicates() -> dict[str, Any]:
    return {
        "project": "dup", "title": "Quick start", "stack": "flask-api",
        "entities": [{"name": name, "fields": [{"name": "x", "type": "integer"}]}
                     for name in ("Health", "Entities", "Contents", "Conventions",
                                  "Quick_start", "Errors", "API_reference", "Task",
                                  "Tasks", "task_1")],
    }


_TITLES = [
    "", " ", "Team todo list", "  spaced   out  ", "Café crème — déjà vu", "日本語のタイトル",
    "tab\there", "nul\x00byte", "soft\u00adhyphen", "zero\u200bwidth", "nb\u00a0sp",
    "line\u2028sep", "bidi\u202eoverride", "emoji 🚀 rocket", "combining e\u0301",
    "# hashes #", "trailing #", "\\", "back\\slash\\", "&amp; &lt; &#35; &copy;",
    "*em* _em_ **strong** ~~del~~ `code` [link](x) ![img](y) <b>", "1. item", "- item",
    "+ item", "=== x", "> quote", "|a|b|", "100% $5 ^caret^ {braces} @at", "a  \x7f  b",
    "\u3000ideographic space\u3000", "Quick start", "Contents", "x" * 200,
]


@pytest.mark.parametrize("title", _TITLES)
def test_titles_match_the_reference(title: str, code: dict[str, str],
                                    needs: dict[str, Any],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    needs["title"] = title
    needs["description"] = title + "\n" + title
    assert fast(code, needs) == reference(code, needs, monkeypatch)


@pytest.mark.parametrize("case", ["fixture", "hostile", "duplicates", "big", "example"])
def test_documents_match_the_reference(case: str, code: dict[str, str],
                                       needs: dict[str, Any],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    if case == "hostile":
        needs = _hostile(needs)
    elif case == "duplicates":
        needs = _duplicates()
    elif case == "big":
        needs = big_needs(20, 10)
    elif case == "example":
        needs = json.loads((FIXTURES / "todo" / "needs.json").read_text("utf-8"))
        code = generate(needs)
    assert validate_needs(needs) == []
    out = fast(code, needs)
    assert out == reference(code, needs, monkeypatch)
    for path in DOC_PATHS:  # and what after_generation writes passes the markdown-it check
        check_document(out[path], path, out.keys())


def test_random_needs_match_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(20261125)
    alphabet = ("abcXYZ019 _-.,:;!?#*`~[]()<>&|\\/'\"=+$%^{}@\t\n\u00a0\u00e9\u0301\u200b"
                "\u2028\u3000🚀")
    for _ in range(40):
        def text(n: int) -> str:
            return "".join(rng.choice(alphabet) for _ in range(rng.randrange(n)))
        needs: dict[str, Any] = {"project": "r", "stack": "flask-api",
                                 "title": text(40), "description": text(80), "entities": []}
        for i in range(rng.randrange(1, 4)):
            name = rng.choice(["Task", "Contents", "Health", "Errors", "X", "Entities"])
            needs["entities"].append({
                "name": f"{name}{i}" if rng.random() < 0.5 else name + "_" * i,
                "description": text(60),
                "fields": [{"name": f"f{j}", "type": rng.choice(TYPES),
                            "description": text(30)} for j in range(rng.randrange(1, 4))],
            })
        assert validate_needs(needs) == [], needs
        assert fast({}, needs) == reference({}, needs, monkeypatch), needs


def test_the_fast_path_parses_nothing_for_printable_text(
    code: dict[str, str], needs: dict[str, Any], no_parse: None
) -> None:
    needs["title"] = "Café — <b>bold</b> & *stars* | pipes # [x](y) \\ 1. ~~s~~"
    needs["description"] = HOSTILE + "\n- list\n===\n```\n## not a heading"
    fast(code, needs)
    fast(code, _duplicates())


# ------------------------------------------------------------------ the pieces


def _heading_corpus() -> list[str]:
    corpus = [chr(c) for c in range(0x80)] + _TITLES
    corpus += [chr(a) + chr(b) for a in range(0x20, 0x7F) for b in (0x20, 0x23, 0x5C, 0x61)]
    corpus += ["&amp;", "&lt;x&gt;", "&amp", "&#35;", "&copy;", "\\#", "\\", "a\\", "\\a",
               "x #", "x \\#", "x ##", "#", " x", "x ", "a  b", "\u00a0x", "x\u00a0"]
    for cat_sample in (0x00AD, 0x200B, 0x2028, 0x2029, 0x3000, 0xE000, 0x0378, 0x0301,
                       0x1F680, 0xFEFF, 0x2060, 0x180E, 0x85):
        corpus += [chr(cat_sample), f"a{chr(cat_sample)}b", f"a {chr(cat_sample)} b"]
    return corpus


def test_heading_line_reads_headings_as_markdown_it_does() -> None:
    for raw in _heading_corpus():
        for line in (f"# {escape_inline(raw)}", f"### {raw}"):
            expected = None
            if "\n" not in line:  # (heading_line reads one line only)
                found = headings(line)
                tokens = markdown.parser().parse(line)
                if len(tokens) == 3 and tokens[0].type == "heading_open":
                    expected = (found[0].level, found[0].text)
            assert heading_line(line) == expected, (raw, line)


def test_ascii_escaping_matches_the_per_character_rules() -> None:
    def slow(text: str) -> str:
        out = []
        for char in text:
            if char in "&<>":
                out.append({"&": "&amp;", "<": "&lt;", ">": "&gt;"}[char])
            elif char in "\\`*_[]|#~$!":
                out.append("\\" + char)
            elif unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") and char != "\t":
                out.append(" ")
            else:
                out.append(char)
        return "".join(out)

    every = "".join(chr(c) for c in range(0x80))
    assert markdown._escape_chars(every) == slow(every)
    assert markdown._escape_chars(every + "é") == slow(every + "é")


_BLOCKS = [
    "plain paragraph", "two\nlines", "- a\n- b", "1. one\n2. two", "> quote", "> # quoted",
    "- # in a list", "1) # in a list", "text\n===", "text\n---", "---", "***", "  ## indented",
    "    code", "\tcode", "```\n# in a fence\n```", "```json\n{\"a\": 1}\n```",
    "```\nunclosed", "````\n# x\n```", "```\n# x\n  ```\n# y\n```", "~~~\n# x\n~~~",
    "| a | b |\n|---|---|\n| # | x |", "`code span`", "<div>\n# x\n</div>", "#nospace",
    "####### seven", "# h1", "## h2", "### h3", "#### h4", "## Contents", "## Task",
    "### Task", "## Task #", "## \\# esc", "## a &amp; b", "## *em*", "## `code`",
    "## [link](#x)", "## ", "#  ", "## x\n## y", "", "a\n# b", "\\# not", "## Café",
    "## zero\u200bwidth", "## nb\u00a0sp",
]


def test_join_with_toc_matches_insert_toc_on_random_documents() -> None:
    rng = random.Random(7)
    for _ in range(400):
        head = [rng.choice(["# Title", "# " + rng.choice(_BLOCKS)]),
                *rng.sample(_BLOCKS, rng.randrange(3)), "## Contents"]
        rest = [rng.choice(_BLOCKS) for _ in range(rng.randrange(1, 12))]
        levels = rng.choice([(2, 3), (1, 2, 3, 4), (2,)])
        assert join_with_toc(head, rest, levels=levels) == insert_toc(
            "\n\n".join(head), "\n\n".join(rest), levels=levels), (head, rest)


def test_slugs_of_generated_headings_are_unique(code: dict[str, str]) -> None:
    out = fast(code, _duplicates())
    for path in PATHS:
        anchors = [h.anchor for h in headings(out[path])]
        assert len(anchors) == len(set(anchors))
    slugger = Slugger()
    assert [slugger.unique(t) for t in ("Health", "Health", "Health-1")] == [
        "health", "health-1", "health-1-1"]


def test_escape_block_never_opens_a_block() -> None:
    text = escape_block("# a\n---\n```\n    b\n> c\n- d\n1. e\n<div>")
    assert markdown._simple_block(text)
