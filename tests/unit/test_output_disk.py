"""A full disk while writing OUTDIR is a one-line error (exit 1) and changes nothing.

The disk is real: a small tmpfs mounted for the test when this process may mount (root
with CAP_SYS_ADMIN), and in any case a file-size limit (RLIMIT_FSIZE) on the process,
which makes the kernel refuse the write as a full disk would.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

DIHYA = Path(sys.executable).parent / "dihya"


def dihya(cwd: Path, *args: str, fsize: int | None = None) -> subprocess.CompletedProcess[str]:
    def limit() -> None:
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    env = {k: v for k, v in os.environ.items() if not k.startswith("DIHYA_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return subprocess.run([str(DIHYA), "--config", str(cwd / "dihya.toml"), *args],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=120,
                          preexec_fn=limit)


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture
def home(tmp_path: Path, needs: dict[str, Any]) -> Path:
    (tmp_path / "dihya.toml").write_text("[plugins]\n")
    (tmp_path / "needs.json").write_text(json.dumps(needs))
    return tmp_path


@pytest.fixture
def small_disk(home: Path) -> Iterator[Path]:
    disk = home / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the RLIMIT_FSIZE test covers this")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def fill(disk: Path) -> None:
    with open(disk / "filler", "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def assert_one_line_error(result: subprocess.CompletedProcess[str], cause: str) -> None:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot write "), result.stderr
    assert cause in lines[0] and "is as it was" in lines[0] and "free some space" in lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_a_full_tmpfs_changes_nothing(home: Path, small_disk: Path) -> None:
    out = small_disk / "out"
    assert dihya(home, "generate", "needs.json", "-o", str(out)).returncode == 0
    (out / "notes.txt").write_text("mine\n")
    before = snapshot(out)
    fill(small_disk)

    result = dihya(home, "generate", "needs.json", "-o", str(out), "--update")
    assert_one_line_error(result, "No space left on device")
    assert snapshot(out) == before
    fresh = dihya(home, "generate", "needs.json", "-o", str(small_disk / "new"))
    assert_one_line_error(fresh, "No space left on device")
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "out"]


def test_a_file_size_limit_changes_nothing(home: Path) -> None:
    out = home / "out"
    assert dihya(home, "generate", "needs.json", "-o", str(out)).returncode == 0
    before = snapshot(out)
    result = dihya(home, "generate", "needs.json", "-o", str(out), "--force", fsize=256)
    assert_one_line_error(result, "File too large")
    assert snapshot(out) == before
    fresh = dihya(home, "generate", "needs.json", "-o", str(home / "new"), fsize=256)
    assert_one_line_error(fresh, "File too large")
    assert sorted(p.name for p in home.iterdir()) == ["dihya.toml", "needs.json", "out"]
