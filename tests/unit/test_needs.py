"""Needs and code validation: every problem, with its JSON path and a fix."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from dihya.needs import MAX_NEEDS_BYTES, validate_code, validate_needs

TODO = json.loads((Path(__file__).parents[2] / "examples/needs/todo.json").read_text())


def paths(needs: object) -> dict[str, str]:
    return {p.path: p.message for p in validate_needs(needs)}


def test_example_is_valid() -> None:
    assert validate_needs(TODO) == []


def test_every_schema_problem_is_listed_with_its_path() -> None:
    bad = copy.deepcopy(TODO)
    bad["project"] = "Todo App"
    bad["stack"] = "rails"
    bad["entities"][0]["fields"][1]["type"] = "blob"
    bad["entities"][1]["name"] = "9lives"
    found = paths(bad)
    assert set(found) == {"$.project", "$.stack", "$.entities[0].fields[1].type",
                          "$.entities[1].name"}
    assert "project slug" in found["$.project"]
    assert "identifier" in found["$.entities[1].name"]


def test_semantic_problems() -> None:
    bad = copy.deepcopy(TODO)
    bad["entities"][1]["name"] = "task"
    fields = bad["entities"][0]["fields"]
    fields.append({"name": "id", "type": "integer"})
    fields.append({"name": "Title", "type": "string"})
    fields.append({"name": "class", "type": "string"})
    fields[2]["default"] = "yes"
    fields[1]["max_length"] = 3
    found = paths(bad)
    assert "declared twice" in found["$.entities[1].name"]
    assert "reserved" in found["$.entities[0].fields[7].name"]
    assert "declared twice" in found["$.entities[0].fields[8].name"]
    assert "reserved word" in found["$.entities[0].fields[9].name"]
    assert "not a valid boolean" in found["$.entities[0].fields[2].default"]
    assert "string fields only" in found["$.entities[0].fields[1].max_length"]


@pytest.mark.parametrize(("ftype", "good", "bad"), [
    ("string", "abc", 3), ("text", "x" * 1000, None.__class__), ("integer", 3, 3.5),
    ("float", 2, "2"), ("boolean", False, 0), ("date", "2026-01-31", "31/01/2026"),
    ("datetime", "2026-01-31T10:00:00", "tomorrow"),
])
def test_typed_defaults(ftype, good, bad) -> None:
    needs = {"project": "p", "stack": "flask-api",
             "entities": [{"name": "E", "fields": [{"name": "f", "type": ftype, "default": good}]}]}
    assert validate_needs(needs) == []
    if bad is not None.__class__:
        needs["entities"][0]["fields"][0]["default"] = bad
        assert "$.entities[0].fields[0].default" in paths(needs)


def test_limits() -> None:
    many = {"project": "p", "stack": "flask-api",
            "entities": [{"name": f"E{i}", "fields": [{"name": "f", "type": "text"}]}
                         for i in range(101)]}
    assert "$.entities" in paths(many)
    wide = {"project": "p", "stack": "flask-api",
            "entities": [{"name": "E", "fields": [{"name": f"f{i}", "type": "text"}
                                                  for i in range(101)]}]}
    assert "$.entities[0].fields" in paths(wide)
    huge = copy.deepcopy(TODO)
    huge["x-blob"] = "x" * MAX_NEEDS_BYTES
    assert "limit" in paths(huge)["$"]
    assert "not JSON data" in paths({"project": {1, 2}})["$"]


def test_entities_mapping_to_one_table() -> None:
    needs = {"project": "p", "stack": "flask-api", "entities": [
        {"name": "TaskItem", "fields": [{"name": "a", "type": "text"}]},
        {"name": "task_item", "fields": [{"name": "a", "type": "text"}]}]}
    assert "same table" in paths(needs)["$.entities[1].name"]


def test_extension_keys_and_unknown_keys() -> None:
    ok = dict(TODO, **{"x-theme": {"color": "blue"}})
    assert validate_needs(ok) == []
    assert "prefix extension keys" in paths(dict(TODO, theme="blue"))["$"]


@pytest.mark.parametrize(("code", "fragment"), [
    ([], "must be an object"),
    ({"/abs.py": ""}, "absolute"),
    ({"a/../b.py": ""}, ".."),
    ({"a//b.py": ""}, "empty"),
    ({"a\\b.py": ""}, "separator"),
    ({"C:/x.py": ""}, "absolute"),
    ({"a\x00.py": ""}, "control"),
    ({"a.py": b"bytes"}, "text"),
    ({"a.py": "é" * (600 * 1024)}, "larger"),
    ({f"f{i}": "" for i in range(501)}, "limit is 500"),
])
def test_code_validation(code, fragment) -> None:
    problems = validate_code(code)
    assert problems and fragment in str(problems[0])


def test_valid_code() -> None:
    assert validate_code({"app/x.py": "print(1)\n", "README.md": ""}) == []


def _mutations() -> list[object]:
    base = copy.deepcopy(TODO)
    field = base["entities"][0]["fields"][0]
    cases: list[object] = [base, {}, [], None, "needs", {"project": "p"}]
    for key, value in [("project", 3), ("project", ""), ("project", "a" * 64), ("stack", None),
                       ("entities", {}), ("entities", []), ("title", "t" * 201), ("version", "1.x"),
                       ("x-ok", {"any": [1, 2]}), ("x-", 1), ("extra", 1), ("description", True)]:
        cases.append(dict(base, **{key: value}))
    for key, value in [("type", "blob"), ("required", 1), ("required", "yes"), ("max_length", True),
                       ("max_length", 0), ("max_length", 1.5), ("default", [1]), ("default", {}),
                       ("name", "1x"), ("name", "a" * 65), ("description", 3), ("other", 1)]:
        mutated = copy.deepcopy(base)
        mutated["entities"][0]["fields"][0] = dict(field, **{key: value})
        cases.append(mutated)
    no_fields = copy.deepcopy(base)
    no_fields["entities"][0]["fields"] = []
    cases.append(no_fields)
    return cases


@pytest.mark.parametrize("needs", _mutations())
def test_fast_check_agrees_with_jsonschema(needs: object) -> None:
    from dihya.needs import _passes_fast_check, _validator

    reference = not any(True for _ in _validator().iter_errors(needs))
    assert _passes_fast_check(needs) == reference


def test_fast_check_leaves_the_shared_schema_untouched() -> None:
    from dihya.needs import _fast_validator, needs_schema

    before = json.dumps(needs_schema(), sort_keys=True)
    _fast_validator.cache_clear()
    _fast_validator()
    assert json.dumps(needs_schema(), sort_keys=True) == before


def test_load_json_refuses_nesting_past_the_limit() -> None:
    from dihya.needs import MAX_JSON_DEPTH, JsonDepthError, load_json, nesting_depth

    assert nesting_depth(load_json("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH),
                         MAX_JSON_DEPTH) == MAX_JSON_DEPTH
    for text in ("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1), "[" * 200_000):
        with pytest.raises(JsonDepthError, match=str(MAX_JSON_DEPTH)):
            load_json(text)


def test_load_json_skips_the_walk_only_when_the_text_cannot_nest_too_deep() -> None:
    """The walk is skipped when the text holds at most MAX_JSON_DEPTH `[` and `{`: a body
    one level too deep is refused whatever it is made of (objects and arrays mixed, as
    bytes in UTF-8, UTF-16 or UTF-32), and brackets inside strings only make it walk."""
    from dihya.needs import MAX_JSON_DEPTH, JsonDepthError, load_json

    depth = MAX_JSON_DEPTH + 1
    mixed = '{"a":[' * (depth // 2) + "[" * (depth % 2) + "1" + "]" * (depth % 2) \
        + "]}" * (depth // 2)
    for text in (mixed, mixed.encode("utf-8"), mixed.encode("utf-16"),
                 mixed.encode("utf-32")):
        with pytest.raises(JsonDepthError):
            load_json(text)
    at_limit = '{"a":[' * (MAX_JSON_DEPTH // 2) + "1" + "]}" * (MAX_JSON_DEPTH // 2)
    assert load_json(at_limit.encode("utf-16"))
    padded = '{"s": "' + "[{" * 100 + '", "v": [[1]]}'  # many openers, shallow: walked
    assert load_json(padded)["v"] == [[1]]


def test_nesting_depth_stops_past_the_limit_whatever_the_depth() -> None:
    from dihya.needs import MAX_JSON_DEPTH, nesting_depth

    deep: list[object] = []
    for _ in range(100_000):  # built in Python: deeper than any recursion limit
        deep = [deep, {"k": 1}]
    assert nesting_depth(deep, MAX_JSON_DEPTH) == MAX_JSON_DEPTH + 1
    assert nesting_depth({"a": [1, {"b": []}], "c": {}}, MAX_JSON_DEPTH) == 4
    assert nesting_depth("x", MAX_JSON_DEPTH) == 0 and nesting_depth([], 0) == 1


def test_validation_lists_a_bounded_number_of_problems() -> None:
    from dihya.needs import MAX_PROBLEMS

    problems = validate_needs({"project": "ok", "stack": "flask-api",
                               "entities": [1] * 100_000})
    assert len(problems) == MAX_PROBLEMS + 1
    assert problems[-1].message.startswith("more problems were found")


def test_cli_generate_refuses_deep_json_in_one_line(tmp_path) -> None:
    from click.testing import CliRunner

    from dihya.cli import main

    needs = tmp_path / "deep.json"
    needs.write_text("[" * 200_000)
    config = tmp_path / "dihya.toml"
    config.write_text("[plugins]\n")
    result = CliRunner().invoke(main, ["--config", str(config), "generate", str(needs),
                                       "-o", str(tmp_path / "out")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "nested deeper than the limit of 64" in result.output
