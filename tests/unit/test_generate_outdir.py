"""The real `dihya generate` command never destroys what it did not write.

Each test runs the installed `dihya` in a child process against real directories: the
issue's `notes.txt` case, `-o .` and an ancestor, files the user added or edited, and the
re-run of `make demo` (its `demo-config` and `demo-project` steps, the cheap ones).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dihya.output.manifest import MANIFEST_NAME

ROOT = Path(__file__).resolve().parents[2]
TODO = ROOT / "examples" / "needs" / "todo.json"
DIHYA = Path(sys.executable).parent / "dihya"


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIHYA_")}
    return subprocess.run([str(DIHYA), "--config", str(cwd / "dihya.toml"), *args],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "dihya.toml").write_text("[plugins]\n")
    return tmp_path


@pytest.fixture
def generated(home: Path) -> Path:
    out = home / "todo"
    result = run(home, "generate", str(TODO), "-o", str(out))
    assert result.returncode == 0, result.stderr
    return out


def test_force_keeps_a_users_notes_txt(home: Path) -> None:
    """`mkdir x; echo keep > x/notes.txt; dihya generate todo.json -o x --force`."""
    (home / "x").mkdir()
    (home / "x/notes.txt").write_text("keep\n")
    result = run(home, "generate", str(TODO), "-o", "x", "--force")
    assert result.returncode == 2
    assert "notes.txt" in result.stderr and MANIFEST_NAME in result.stderr
    assert files_of(home / "x") == {"notes.txt": b"keep\n"}


@pytest.mark.parametrize("where", [".", ".."])
def test_the_current_directory_and_its_parent_are_refused(generated: Path, where: str) -> None:
    before = files_of(generated)
    cwd = generated / "app"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIHYA_")}
    result = subprocess.run([str(DIHYA), "--config", str(generated.parent / "dihya.toml"),
                             "generate", str(TODO), "-o", where, "--force"],
                            capture_output=True, text=True, cwd=cwd, env=env, timeout=120)
    assert result.returncode == 2 and "current directory" in result.stderr
    assert files_of(generated) == before and cwd.is_dir()


def test_force_names_added_and_edited_files_and_changes_nothing(generated: Path) -> None:
    (generated / "notes.txt").write_text("keep\n")
    (generated / "README.md").write_text("my own readme\n")
    before = files_of(generated)
    result = run(generated.parent, "generate", str(TODO), "-o", str(generated), "--force")
    assert result.returncode == 2
    assert "notes.txt (not written by dihya)" in result.stderr
    assert "README.md (changed since dihya wrote it)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert files_of(generated) == before


def test_force_regenerates_its_own_untouched_output(generated: Path) -> None:
    result = run(generated.parent, "generate", str(TODO), "-o", str(generated), "--force")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in generated.parent.iterdir()) == ["dihya.toml", "todo"]


def test_update_keeps_the_venv_the_readme_tells_you_to_make(generated: Path) -> None:
    (generated / ".venv/bin").mkdir(parents=True)
    (generated / ".venv/bin/python").write_text("#!venv\n")
    (generated / "instance").mkdir()
    (generated / "instance/app.sqlite3").write_bytes(b"data")
    (generated / "app/__init__.py").unlink()  # a deleted generated file comes back
    result = run(generated.parent, "generate", str(TODO), "-o", str(generated), "--update")
    assert result.returncode == 0, result.stderr
    assert "kept what you added: .venv/, instance/" in result.stdout
    assert (generated / ".venv/bin/python").read_text() == "#!venv\n"
    assert (generated / "instance/app.sqlite3").read_bytes() == b"data"
    assert (generated / "app/__init__.py").is_file()


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_demo_steps_rerun_keep_the_config_and_the_users_files(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    make = ["make", "--no-print-directory", "-C", str(ROOT), "demo-config", "demo-project",
            f"DEMO={demo}", f"DIHYA={DIHYA} --config {demo}/dihya.toml"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIHYA_", "MAKE"))}

    def make_demo() -> str:
        result = subprocess.run(make, capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    assert f"wrote {demo}/dihya.toml" in make_demo()
    config = demo / "dihya.toml"
    config.write_text(config.read_text() + "# my edit\n")
    (demo / "todo/.venv/bin").mkdir(parents=True)
    (demo / "todo/.venv/bin/python").write_text("#!venv\n")

    second = make_demo()
    assert "keeping" in second and config.read_text().endswith("# my edit\n")
    assert "kept what you added: .venv/" in second
    assert f"Generated project: {demo}/todo " in second
    assert (demo / "todo/.venv/bin/python").read_text() == "#!venv\n"

    (demo / "todo/README.md").write_text("my notes on the demo\n")
    third = make_demo()
    assert f"generating beside it, into {demo}/todo.new" in third
    assert (demo / "todo/README.md").read_text() == "my notes on the demo\n"
    assert (demo / "todo.new/README.md").is_file()
    assert f"Generated project: {demo}/todo.new " in third
