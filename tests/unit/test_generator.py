"""Unit tests of the core generator (`dihya.generator`, stack `flask-api`)."""

from __future__ import annotations

import ast
import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dihya.generator import STACKS, flask_api, generate, naming
from dihya.needs import check_needs, unsafe_path_reason, validate_code

ROOT = Path(__file__).resolve().parents[2]
TODO = ROOT / "examples" / "needs" / "todo.json"
EVIL = 'Evil """ quote\n import os\nos.system("rm -rf /") \\ back\\slash \\"""\r\x0b\u2028end"'
FIELD_TYPES = ("string", "text", "integer", "float", "boolean", "date", "datetime")


def todo_needs() -> dict[str, Any]:
    return check_needs(json.loads(TODO.read_text("utf-8")))


def all_types_needs() -> dict[str, Any]:
    """Every field type, pluralisation, a keyword module and hostile text everywhere."""
    return check_needs({
        "project": "all-types",
        "title": EVIL,
        "description": EVIL,
        "stack": "flask-api",
        "x-extra": {"ignored": True},
        "entities": [
            {"name": "Category", "description": EVIL, "fields": [
                {"name": "label", "type": "string", "required": True, "max_length": 3,
                 "description": EVIL, "default": "a\"'"},
                {"name": "body", "type": "text", "description": EVIL, "default": EVIL},
                {"name": "rank", "type": "integer", "required": True, "default": 5},
                {"name": "weight", "type": "float", "default": 2},
                {"name": "active", "type": "boolean", "required": True},
                {"name": "since", "type": "date", "default": "20260131"},
                {"name": "seen_at", "type": "datetime", "default": "2026-01-31T12:00:00Z"},
            ]},
            {"name": "Box", "fields": [{"name": "size", "type": "float", "required": True}]},
            {"name": "HTTPLog", "fields": [{"name": "order", "type": "integer"}]},
            {"name": "Class", "fields": [{"name": "group", "type": "string"}]},
        ],
    })


def python_files(code: dict[str, str]) -> dict[str, str]:
    return {path: text for path, text in code.items() if path.endswith(".py")}


def test_stacks_and_dispatch() -> None:
    assert "flask-api" in STACKS
    assert STACKS["flask-api"] is flask_api.generate
    assert generate(todo_needs()) == flask_api.generate(todo_needs())


@pytest.mark.parametrize("stack", ["django", None, 3])
def test_unknown_stack_is_a_value_error_listing_known_stacks(stack: object) -> None:
    needs = {**todo_needs(), "stack": stack}
    with pytest.raises(ValueError, match=r"unknown stack .*known stacks: flask-api"):
        generate(needs)


@pytest.mark.parametrize("make", [todo_needs, all_types_needs])
def test_output_is_deterministic(make: Any) -> None:
    needs = make()
    first = generate(needs)
    assert generate(copy.deepcopy(needs)) == first
    assert list(first) == sorted(first)
    assert needs == make(), "generate must not change the needs"


def test_output_is_identical_across_processes() -> None:
    script = ("import json, sys; from dihya.generator import generate; "
              "print(json.dumps(generate(json.load(open(sys.argv[1])))))")
    outputs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed,
               "PYTHONPATH": os.pathsep.join([str(ROOT / "core"), *sys.path])}
        done = subprocess.run([sys.executable, "-c", script, str(TODO)], env=env,
                              capture_output=True, text=True, check=True)
        outputs.add(done.stdout)
    assert len(outputs) == 1
    assert json.loads(outputs.pop()) == generate(todo_needs())


@pytest.mark.parametrize("make", [todo_needs, all_types_needs])
def test_paths_are_safe_and_the_mapping_valid(make: Any) -> None:
    code = generate(make())
    assert all(unsafe_path_reason(path) is None for path in code)
    assert validate_code(code) == []


def test_project_files() -> None:
    code = generate(todo_needs())
    for path in ("app/__init__.py", "app/db.py", "app/schema.sql", "app/validation.py",
                 "app/api/__init__.py", "app/models/__init__.py", "wsgi.py", "requirements.txt",
                 ".gitignore", "README.md", "pytest.ini", "tests/conftest.py"):
        assert path in code
    assert code["requirements.txt"].splitlines() == ["Flask>=3.0,<4", "pytest>=8"]
    assert "def create_app(config: dict[str, Any] | None = None) -> Flask:" in code[
        "app/__init__.py"]
    assert '"todo.sqlite3"' in code["app/__init__.py"]
    assert "app = create_app()" in code["wsgi.py"]
    assert code["README.md"].startswith("# Team todo list\n")
    assert '@health.get("/health")' in code["app/api/__init__.py"]


@pytest.mark.parametrize("make", [todo_needs, all_types_needs])
def test_every_entity_gets_model_api_and_test_files(make: Any) -> None:
    needs = make()
    code = generate(needs)
    for entity in needs["entities"]:
        name = entity["name"]
        module = naming.module_name(name)
        assert naming.model_module_path(name) == f"app/models/{module}.py"
        assert "FIELDS: dict[str, Field] = {" in code[naming.model_module_path(name)]
        api = code[naming.api_module_path(name)]
        assert f'url_prefix="{naming.collection_path(name)}"' in api
        for route in ('@bp.get("")', '@bp.post("")', '@bp.get("/<int:item_id>")',
                      '@bp.patch("/<int:item_id>")', '@bp.delete("/<int:item_id>")'):
            assert route in api
        assert f'URL = "{naming.collection_path(name)}"' in code[naming.test_module_path(name)]
        assert f'CREATE TABLE IF NOT EXISTS "{naming.collection_name(name)}"' in code[
            "app/schema.sql"]
        assert f'    "{module}",\n' in code["app/api/__init__.py"]
    entity_files = {p for p in code if p.startswith(("app/models/", "app/api/", "tests/test_"))}
    assert len(entity_files) == 3 * len(needs["entities"]) + 3  # two __init__, test_0_app


def test_pluralised_collections() -> None:
    code = generate(all_types_needs())
    assert 'url_prefix="/api/categories"' in code["app/api/category.py"]
    assert 'url_prefix="/api/boxes"' in code["app/api/box.py"]
    assert 'url_prefix="/api/http_logs"' in code["app/api/http_log.py"]
    assert 'url_prefix="/api/classes"' in code["app/api/class.py"]


def test_python_keyword_module_is_imported_by_name() -> None:
    api = generate(all_types_needs())["app/api/class.py"]
    assert 'model = import_module("app.models.class")' in api
    assert "from app.models import" not in api


@pytest.mark.parametrize("make", [todo_needs, all_types_needs])
def test_every_python_file_compiles_and_has_a_module_docstring(make: Any) -> None:
    for path, text in python_files(generate(make())).items():
        tree = compile(text, path, "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
        assert isinstance(tree, ast.Module)
        assert ast.get_docstring(tree), f"{path} has no module docstring"
        assert "\t" not in text and "\r" not in text


def test_needs_text_cannot_become_code() -> None:
    code = generate(all_types_needs())
    for path, text in python_files(code).items():
        tree = ast.parse(text, path)
        imported = {alias.name for node in ast.walk(tree)
                    if isinstance(node, ast.Import | ast.ImportFrom) for alias in node.names}
        assert "os" not in imported, path
        calls = {node.func.attr for node in ast.walk(tree)
                 if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)}
        assert "system" not in calls, path
    docstring = ast.get_docstring(ast.parse(code["app/__init__.py"]))
    assert docstring is not None
    assert 'Evil """ quote import os os.system("rm -rf /") \\ back\\slash' in docstring
    model = code["app/models/category.py"]
    assert f"default={EVIL!r}" in model
    label = repr("a\"'")
    assert f'"label": Field("string", required=True, default={label}, max_length=3),' in model
    assert "\n    # Evil \"\"\" quote import os" in model
    assert "\n-- Category: Evil \"\"\" quote import os" in code["app/schema.sql"]


def test_docstring_and_literal_filters_round_trip() -> None:
    text = flask_api.docstring_text(EVIL, indent=4, width=30)
    value = ast.literal_eval(f'"""{text}\n"""')
    assert " ".join(value.split()) == flask_api.one_line(EVIL)
    assert all(len(line) <= 40 for line in text.splitlines())
    for literal in ["", "plain", 'd"q', "s'q", "both'\"", EVIL, "\ud800", 0, -5, 2.5, True, None]:
        assert ast.literal_eval(flask_api.py_literal(literal)) == literal
    assert flask_api.py_literal("plain") == '"plain"'
    with pytest.raises(ValueError):
        flask_api.py_literal(float("nan"))
    assert flask_api.comment("a\nb", 4, "-- ") == "-- a b"


def test_all_field_types_are_stored_validated_and_tested() -> None:
    code = generate(all_types_needs())
    schema = code["app/schema.sql"]
    for column in ('"label" TEXT NOT NULL', '"body" TEXT,', '"rank" INTEGER NOT NULL',
                   '"weight" REAL,', '"active" INTEGER NOT NULL', '"since" TEXT,',
                   '"seen_at" TEXT\n'):
        assert column in schema
    model = code["app/models/category.py"]
    for spec in ('"rank": Field("integer", required=True, default=5),',
                 '"weight": Field("float", default=2.0),',
                 '"active": Field("boolean", required=True),',
                 '"since": Field("date", default="2026-01-31"),',
                 '"seen_at": Field("datetime", default="2026-01-31T12:00:00+00:00"),'):
        assert spec in model
    validation = code["app/validation.py"]
    for ftype in FIELD_TYPES:
        assert f'"{ftype}": check_{ftype},' in validation
    tests = code["tests/test_category.py"]
    for invalid in ('pytest.param("label", "x" * 4, id="label-too-long")',
                    'pytest.param("body", 123, id="body-number")',
                    'pytest.param("rank", True, id="rank-boolean")',
                    'pytest.param("weight", "2.5", id="weight-string")',
                    'pytest.param("active", 1, id="active-number")',
                    'pytest.param("since", "2026-02-30", id="since-no-such-day")',
                    'pytest.param("seen_at", "yesterday", id="seen_at-format")'):
        assert invalid in tests
    assert '"since": "2026-01-31",' in tests  # canonical default expected by DEFAULTS
    assert 'REQUIRED: list[str] = [\n    "label",\n    "rank",\n    "active",\n]' in tests


def test_x_keys_are_ignored() -> None:
    needs = todo_needs()
    assert generate({**needs, "x-anything": {"stack": "nope"}}) == generate(needs)


def test_clashing_generated_names_are_refused() -> None:
    # `check_needs` refuses these too; the generator must never silently drop a file.
    needs: dict[str, Any] = {"project": "p", "stack": "flask-api", "entities": [
        {"name": "TaskItem", "fields": [{"name": "a", "type": "text"}]},
        {"name": "task_item", "fields": [{"name": "a", "type": "text"}]},
    ]}
    with pytest.raises(ValueError, match="would share the module name 'task_item'"):
        generate(needs)


def test_defaults_that_cannot_be_stored_are_refused() -> None:
    needs = todo_needs()
    needs["entities"][0]["fields"][3]["default"] = 2**70
    with pytest.raises(ValueError, match="cannot be stored as integer"):
        generate(needs)


def test_environment_is_cached() -> None:
    assert flask_api.environment() is flask_api.environment()


@pytest.mark.parametrize(("make", "ignore"), [(todo_needs, "RUF"), (all_types_needs, "E501")])
def test_generated_code_is_ruff_clean(make: Any, ignore: str, tmp_path: Path) -> None:
    """Long user text in literals may make long lines; nothing else is allowed."""
    ruff = shutil.which("ruff") or shutil.which("ruff", path=str(Path(sys.executable).parent))
    if ruff is None:
        pytest.skip("ruff is not installed")
    for path, text in generate(make()).items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text, "utf-8")
    done = subprocess.run([ruff, "check", "--isolated", "--no-cache", "--line-length", "100",
                           "--select", "E,F,W,I,B,UP,SIM", "--ignore", ignore, "."], cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
