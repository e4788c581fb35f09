"""`dihya plugins new`: refusals (exit 2, nothing written) and the project it writes."""

from __future__ import annotations

import ast
import importlib
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from dihya.authoring.scaffold import LICENSES, ScaffoldError, new_project, oldest_core
from dihya.cli import main
from dihya.plugin import HOOK_SPECS, SUPPORTED_CORE_RANGE, validate_plugin_class

ROOT = Path(__file__).resolve().parents[2]


def new(tmp_path: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--config", str(tmp_path / "none.toml"), "plugins",
                                       "new", *args],
                                env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    return result.exit_code, result.output


@pytest.mark.parametrize("name", ["Bad", "1st", "with_underscore", "double--dash", "-x", "x-",
                                  "a" * 31, "", "dots.no", "dihya-plugin-foo"])
def test_invalid_names_are_refused_with_exit_2(tmp_path: Path, name: str) -> None:
    code, out = new(tmp_path, "--dir", str(tmp_path / "p"), "--", name)
    assert code == 2, out
    assert "invalid plugin name" in out or "prefix" in out
    assert not (tmp_path / "p").exists()


def test_prefixed_name_gets_a_hint(tmp_path: Path) -> None:
    code, out = new(tmp_path, "dihya-plugin-foo", "--dir", str(tmp_path / "p"))
    assert code == 2
    assert "`dihya plugins new foo`" in out


def test_non_empty_target_is_refused_and_left_alone(tmp_path: Path) -> None:
    target = tmp_path / "p"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    code, out = new(tmp_path, "hello", "--dir", str(target))
    assert code == 2
    assert "is not empty" in out
    assert [p.name for p in target.iterdir()] == ["keep.txt"]


def test_a_file_as_target_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    code, _ = new(tmp_path, "hello", "--dir", str(tmp_path / "f"))
    assert code == 2


def test_unknown_license_and_bad_author_are_usage_errors(tmp_path: Path) -> None:
    code, out = new(tmp_path, "hello", "--dir", str(tmp_path / "p"), "--license", "WTFPL")
    assert code == 2 and "WTFPL" in out
    with pytest.raises(ScaffoldError, match="author"):
        new_project("hello", tmp_path / "q", author="a\nb")
    assert not (tmp_path / "q").exists()


def test_default_directory_and_listing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out = new(tmp_path, "hello")
    assert code == 0, out
    assert out.startswith("wrote dihya-plugin-hello (10 files) to dihya-plugin-hello\n")
    wheel = tmp_path / "cache" / "dihya" / "wheels" / "dihya_core-0.1.0-py3-none-any.whl"
    assert wheel.is_file() and f"tests run against this core's wheel: {wheel}" in out
    assert out.split("next:\n")[1].splitlines() == [
        "  cd dihya-plugin-hello", "  python3 -m venv .venv",
        f"  .venv/bin/pip install -q {wheel} -e '.[test]'", "  .venv/bin/pytest -q",
        "  .venv/bin/pip install -q 'tox>=4.11' && .venv/bin/tox"]
    root = tmp_path / "dihya-plugin-hello"
    assert f"[dihya]\ncore = {wheel}\n" in (root / "tox.ini").read_text()
    written = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert written == [".gitignore", "CHANGELOG.md", "LICENSE", "README.md", "pyproject.toml",
                       "src/dihya_plugin_hello/__init__.py", "src/dihya_plugin_hello/plugin.py",
                       "src/dihya_plugin_hello/py.typed", "tests/test_plugin.py", "tox.ini"]
    code, out = new(tmp_path, "hello")  # the same again: the directory is not empty now
    assert code == 2


@pytest.fixture
def project(tmp_path: Path) -> Path:
    new_project("api-notes", tmp_path / "p", author='Jane "JD" Doe')
    return tmp_path / "p"


def test_pyproject(project: Path) -> None:
    data = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    assert data["name"] == "dihya-plugin-api-notes"
    assert data["version"] == "0.1.0"
    assert data["dependencies"] == [f"dihya-core{SUPPORTED_CORE_RANGE}"]
    assert data["license"] == "AGPL-3.0-or-later"
    assert data["authors"] == [{"name": 'Jane "JD" Doe'}]
    assert data["entry-points"]["dihya.generation_plugins"] == {
        "api-notes": "dihya_plugin_api_notes:ApiNotesPlugin"}


def test_module_documents_every_hook_from_the_specs(project: Path) -> None:
    source = (project / "src/dihya_plugin_api_notes/plugin.py").read_text()
    tree = ast.parse(source)
    doc = ast.get_docstring(tree) or ""
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef))
    methods = {n.name: n for n in cls.body if isinstance(n, ast.FunctionDef)}
    for spec in HOOK_SPECS:
        assert spec.signature in doc
        assert spec.name in methods
        method_doc = ast.get_docstring(methods[spec.name]) or ""
        assert " ".join(spec.summary.split())[:40] in " ".join(method_doc.split())
        # the stub takes a subset of the hook's arguments, in spec order; its docstring
        # names every one of them
        taken = [a.arg for a in methods[spec.name].args.args]
        assert taken[0] == "self" and set(taken[1:]) <= set(spec.arg_names)
        assert taken[1:] == [n for n in spec.arg_names if n in taken]
        for arg in spec.args:
            assert f"`{arg.name}`" in method_doc


def test_generated_class_passes_the_loader_check(project: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(project / "src"))
    module = importlib.import_module("dihya_plugin_api_notes")
    try:
        cls = validate_plugin_class(module.ApiNotesPlugin, "api-notes")
        assert cls.author == 'Jane "JD" Doe'
        assert cls.version == "0.1.0" == module.__version__
        out = cls().after_generation({}, {"project": "todo"})
        assert out == {"docs/api-notes.md": "# todo\n\nGenerated with the api-notes plugin.\n"}
    finally:
        for mod in [m for m in sys.modules if m.startswith("dihya_plugin_api_notes")]:
            del sys.modules[mod]


def test_tox_ini_runs_the_tests_once_and_lints(project: Path) -> None:
    text = (project / "tox.ini").read_text()
    assert "envlist = py, lint" in text
    assert "deps = {env:DIHYA_CORE:{[dihya]core}}" in text
    assert f"[dihya]\ncore = dihya-core{SUPPORTED_CORE_RANGE}\n" in text  # no wheel: the index
    assert f"deps = dihya-core=={oldest_core()}" in text  # core-oldest, on demand
    assert f"deps = dihya-core{SUPPORTED_CORE_RANGE}" in text
    assert "ruff check ." in text
    assert oldest_core() == "0.1.0"


def test_a_project_inside_a_git_work_tree_is_written_with_a_warning(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path / "repo")], check=True)
    result = CliRunner().invoke(main, ["plugins", "new", "hello", "--no-core-wheel", "--dir",
                                       str(tmp_path / "repo" / "p")])
    assert result.exit_code == 0, result.output
    assert f"inside the git work tree {tmp_path / 'repo'}" in result.stderr
    assert "tests run against" not in result.stdout
    assert "  .venv/bin/pip install -q -e '.[test]'" in result.stdout


def test_tests_use_dihya_testing(project: Path) -> None:
    text = (project / "tests/test_plugin.py").read_text()
    assert "from dihya.testing import" in text
    assert 'mode="sandbox"' in text


@pytest.mark.parametrize("spdx", LICENSES)
def test_license_texts(tmp_path: Path, spdx: str) -> None:
    new_project("lic", tmp_path / spdx, author="Jane Doe", license=spdx)
    text = (tmp_path / spdx / "LICENSE").read_text()
    first = {"AGPL-3.0-or-later": "GNU AFFERO GENERAL PUBLIC LICENSE", "MIT": "MIT License",
             "Apache-2.0": "Apache License"}[spdx]
    assert text.lstrip().startswith(first)
    assert len(text) > {"MIT": 1000}.get(spdx, 10000)
    if spdx == "MIT":
        assert "Jane Doe" in text and "<year>" not in text
    data = tomllib.loads((tmp_path / spdx / "pyproject.toml").read_text())
    assert data["project"]["license"] == spdx


def test_generated_project_is_ruff_clean(project: Path) -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed")
    result = subprocess.run([ruff, "check", "--no-cache", "."], cwd=project,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_longest_name_is_ruff_clean(tmp_path: Path) -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed")
    new_project("abcdefghij-abcdefghij-abcdefgh", tmp_path / "p")
    result = subprocess.run([ruff, "check", "--no-cache", "."], cwd=tmp_path / "p",
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_packaged_sample_needs_are_the_example() -> None:
    shipped = ROOT / "core/dihya/testing/data/todo.json"
    assert shipped.read_bytes() == (ROOT / "examples/needs/todo.json").read_bytes()
