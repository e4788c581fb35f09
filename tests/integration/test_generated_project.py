"""Generated `flask-api` projects install in a fresh venv and pass their own tests."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dihya.generator import generate
from dihya.needs import check_needs

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TODO = ROOT / "examples" / "needs" / "todo.json"

ALL_TYPES: dict[str, Any] = {
    "project": "every-type",
    "title": 'Every """ type',
    "description": 'Covers every field type.\n import os\n"""',
    "version": "1.2",
    "stack": "flask-api",
    "x-notes": "ignored by the generator",
    "entities": [
        {"name": "Category", "description": "Groups of boxes.", "fields": [
            {"name": "label", "type": "string", "required": True, "max_length": 40},
            {"name": "code", "type": "string", "max_length": 1, "default": "A"},
            {"name": "body", "type": "text", "default": 'multi\nline """ \\ text'},
            {"name": "rank", "type": "integer", "required": True, "default": 5},
            {"name": "weight", "type": "float", "default": 2},
            {"name": "active", "type": "boolean", "required": True},
            {"name": "hidden", "type": "boolean", "default": True},
            {"name": "since", "type": "date", "default": "20260131"},
            {"name": "seen_at", "type": "datetime", "default": "2026-01-31T12:00:00Z"},
        ]},
        {"name": "Box", "fields": [
            {"name": "size", "type": "float", "required": True},
            {"name": "order", "type": "integer"},
        ]},
        {"name": "HTTPLog", "fields": [{"name": "at", "type": "datetime", "required": True}]},
        {"name": "Class", "fields": [{"name": "group", "type": "text"}]},
    ],
}


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment's Python (the projects install their requirements)."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    return venv / ("Scripts" if os.name == "nt" else "bin") / "python"


def run_generated_tests(needs: dict[str, Any], project: Path, python: Path) -> str:
    """Write the generated project, install its requirements, run its pytest; the output."""
    for path, text in generate(check_needs(needs)).items():
        target = project / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, "utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "-r", "requirements.txt"],
        cwd=project, env=env, capture_output=True, text=True, timeout=900,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    done = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project, env=env, capture_output=True, text=True, timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    passed = re.search(r"(\d+) passed", output)
    assert passed and int(passed.group(1)) > 0, output
    assert not re.search(r"\d+ (failed|error)", output), output
    return output


def test_todo_example_project_passes_its_tests(venv_python: Path, tmp_path: Path) -> None:
    needs = json.loads(TODO.read_text("utf-8"))
    output = run_generated_tests(needs, tmp_path / "todo", venv_python)
    assert int(re.findall(r"(\d+) passed", output)[-1]) >= 100


def test_every_field_type_project_passes_its_tests(venv_python: Path, tmp_path: Path) -> None:
    run_generated_tests(ALL_TYPES, tmp_path / "every-type", venv_python)
    assert (tmp_path / "every-type" / "app" / "api" / "category.py").is_file()
    assert (tmp_path / "every-type" / "tests" / "test_box.py").is_file()
