"""`dihya generate` killed with SIGKILL at each step of replacing OUTDIR loses nothing.

Each test runs the real CLI in a child process that kills itself (SIGKILL, no cleanup of
any kind) right before or after one step of the write — the step is wrapped so the kill
lands exactly there, with no timing involved — then checks what a crash leaves, and runs
the real `dihya` command again to recover.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dihya.output.manifest import MANIFEST_NAME
from dihya.output.treeswap import exchange

DIHYA = Path(sys.executable).parent / "dihya"
USER_FILES = {"notes.txt": "keep\n", ".venv/bin/python": "venv\n", "app/mine.py": "mine\n"}

# Runs `dihya.cli.main` after wrapping `module.name` so that its `nth` matching call kills
# the process `before` or `after` it runs. `inside`/`exclude`: only calls whose second
# argument (a rename's destination) contains / does not contain that text are counted.
DRIVER = r"""
import json, os, signal, sys
spec = json.loads(sys.argv[1])
import dihya.output, dihya.output.treeswap
if spec.get("no_exchange"):  # a filesystem without RENAME_EXCHANGE
    dihya.output.treeswap.exchange = lambda a, b: False
module = {"output": dihya.output, "treeswap": dihya.output.treeswap, "os": os}[spec["module"]]
real = getattr(module, spec["name"])
calls = 0

def counted(args):
    where = str(args[1]) if len(args) > 1 else ""
    return (spec.get("inside", "") in where
            and not (spec.get("exclude") and spec["exclude"] in where))

def wrapper(*args, **kwargs):
    global calls
    if not counted(args):
        return real(*args, **kwargs)
    calls += 1
    if spec["when"] == "before" and calls == spec["nth"]:
        os.kill(os.getpid(), signal.SIGKILL)
    result = real(*args, **kwargs)
    if spec["when"] == "after" and calls == spec["nth"]:
        os.kill(os.getpid(), signal.SIGKILL)
    return result

setattr(module, spec["name"], wrapper)
from dihya.cli import main
main(spec["argv"])
"""

CRASH_POINTS: dict[str, dict[str, Any]] = {
    # the new tree half written, no manifest yet
    "writing": {"module": "output", "name": "_write_file", "when": "after", "nth": 3},
    # one of the user's entries already moved into the new tree, the others not
    "carrying": {"module": "os", "name": "rename", "when": "after", "nth": 1,
                 "inside": ".out.tmp-", "exclude": MANIFEST_NAME},
    # exchanged: OUTDIR is the new tree, the old one waits under the temporary name
    "exchanged": {"module": "treeswap", "name": "exchange", "when": "after", "nth": 1},
    # no exchange: OUTDIR renamed away, the new tree not yet renamed into place
    "between-renames": {"module": "treeswap", "name": "rename_into_place", "when": "before",
                        "nth": 1, "no_exchange": True},
    # no exchange: the new tree in place, the old one not yet deleted
    "after-renames": {"module": "treeswap", "name": "rename_into_place", "when": "after",
                      "nth": 1, "no_exchange": True},
}


def files_of(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text() for p in sorted(root.rglob("*"))
            if p.is_file()}


def generated_part(root: Path) -> dict[str, str]:
    """The files `root`'s manifest lists, as they are on disk."""
    listed = json.loads((root / MANIFEST_NAME).read_text())["files"]
    return {rel: (root / rel).read_text() for rel in listed}


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".out."))


class Project:
    """A config without plugins, two needs files whose outputs differ, and OUTDIR holding
    the first one's output plus the user's own files."""

    def __init__(self, tmp_path: Path, needs: dict[str, Any]) -> None:
        self.home = tmp_path
        self.config = tmp_path / "dihya.toml"
        self.config.write_text("[plugins]\n")
        self.first = tmp_path / "first.json"
        self.first.write_text(json.dumps(needs))
        second = {**needs, "entities": [*needs["entities"], {
            "name": "Order", "fields": [{"name": "total", "type": "float"}]}]}
        self.second = tmp_path / "second.json"
        self.second.write_text(json.dumps(second))
        self.out = tmp_path / "work" / "out"
        self.out.parent.mkdir()
        assert self.dihya("generate", str(self.first), "-o", str(self.out)).returncode == 0
        self.old = generated_part(self.out)
        ref = tmp_path / "ref"
        assert self.dihya("generate", str(self.second), "-o", str(ref)).returncode == 0
        self.new = generated_part(ref)
        assert self.old != self.new
        for rel, text in USER_FILES.items():
            (self.out / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.out / rel).write_text(text)

    def argv(self, *flags: str) -> list[str]:
        return ["--config", str(self.config), "generate", str(self.second), "-o", str(self.out),
                *flags]

    def dihya(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DIHYA_")}
        return subprocess.run([str(DIHYA), *args], capture_output=True, text=True,
                              cwd=self.home, env=env, timeout=120)

    def crash(self, point: dict[str, Any], *flags: str) -> None:
        spec = {**point, "argv": self.argv(*flags)}
        result = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(spec)],
                                capture_output=True, text=True, cwd=self.home, timeout=120)
        assert result.returncode == -signal.SIGKILL, result.stderr

    def user_files(self) -> dict[str, str]:
        return {rel: (self.out / rel).read_text() for rel in USER_FILES
                if (self.out / rel).is_file()}


@pytest.fixture
def project(tmp_path: Path, needs: dict[str, Any]) -> Project:
    return Project(tmp_path, needs)


@pytest.mark.parametrize("point", sorted(CRASH_POINTS))
def test_a_kill_at_any_step_loses_nothing_and_the_next_run_recovers(project: Project,
                                                                    point: str) -> None:
    project.crash(CRASH_POINTS[point], "--update")
    parent = project.out.parent
    assert leftovers(parent), "the crash left nothing to recover: the kill came too late"
    if point == "between-renames":
        # the one window of the fallback without RENAME_EXCHANGE: OUTDIR is a hidden sibling
        assert not project.out.exists()
        assert any(name.startswith(".out.old-") for name in leftovers(parent))
    else:
        assert generated_part(project.out) in (project.old, project.new), \
            "OUTDIR is neither the old tree nor the new one"
        if point != "carrying":
            assert project.user_files() == USER_FILES

    again = project.dihya(*project.argv("--update"))
    assert again.returncode == 0, again.stderr
    assert generated_part(project.out) == project.new
    assert project.user_files() == USER_FILES
    assert set(files_of(project.out)) == {*project.new, *USER_FILES, MANIFEST_NAME}
    assert leftovers(parent) == []


@pytest.mark.parametrize("point", ["carrying", "between-renames", "exchanged"])
def test_any_run_puts_back_what_a_crash_left_even_one_that_then_refuses(project: Project,
                                                                       point: str) -> None:
    project.crash(CRASH_POINTS[point], "--update")
    again = project.dihya(*project.argv())  # no --force: recovers, then refuses (not empty)
    assert again.returncode == 2 and "not empty" in again.stderr
    if point == "carrying":
        assert "note: put back" in again.stderr
    assert project.user_files() == USER_FILES
    assert generated_part(project.out) in (project.old, project.new)
    assert leftovers(project.out.parent) == []


def test_a_leftover_that_would_overwrite_a_new_file_is_kept_and_named(project: Project) -> None:
    project.crash(CRASH_POINTS["carrying"], "--update")
    moved = [rel for rel in USER_FILES if not (project.out / rel).exists()]
    assert len(moved) == 1
    (project.out / moved[0]).parent.mkdir(parents=True, exist_ok=True)
    (project.out / moved[0]).write_text("written after the crash\n")
    left = leftovers(project.out.parent)
    again = project.dihya(*project.argv("--update"))
    assert again.returncode == 1
    assert moved[0].split("/")[0] in again.stderr and left[0] in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    assert leftovers(project.out.parent) == left, "the leftover holding the user's file went"
    assert (project.out / moved[0]).read_text() == "written after the crash\n"


def test_this_filesystem_exchanges_atomically(tmp_path: Path) -> None:
    """On Linux, replacing OUTDIR is one renameat2(RENAME_EXCHANGE): no window at all."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "from-a").write_text("a")
    if not exchange(a, b):
        pytest.skip("no RENAME_EXCHANGE here: the two-rename fallback and recovery apply")
    assert [p.name for p in b.iterdir()] == ["from-a"] and list(a.iterdir()) == []
