"""`.pth` files that run code, in a real venv, through the real `dihya` command.

Uses the session's venv (core and bundled plugins installed from wheels): on it, the only
code-running `.pth` is setuptools' own `distutils-precedence.pth`, acknowledged out of the
box. A wheel that ships another one is installed for the test and uninstalled after it.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from support import pipfork
from support.wheels import build_wheel

pytestmark = pytest.mark.slow

DIST = "dihya-test-pth-hook"
PTH = "dihya_test_pth_hook.pth"
# harmless, but real code: it runs in every interpreter of the venv while installed
HOOK = b"import os; os.environ.setdefault('DIHYA_TEST_PTH_RAN', '1')\n"


@contextmanager
def pth_wheel_installed(backend, tmp_path: Path) -> Iterator[Path]:
    wheel = build_wheel(tmp_path / "pth-wheel", DIST, "1.0.0",
                        {PTH: HOOK, "dihya_test_pth_hook/__init__.py": b""}, {}, requires=())
    backend.pip("--no-deps", str(wheel))
    try:
        yield backend.site_packages() / PTH
    finally:
        pipfork.run([str(backend.python), "-m", "pip", "uninstall", "-y", "--quiet", DIST],
                    check=True)


def pth_rows(verify: subprocess.CompletedProcess[str]) -> dict[str, dict[str, object]]:
    return {r["file"]: r for r in json.loads(verify.stdout) if r["check"] == "pth"}


@pytest.fixture
def backend(backend):
    """The session venv's backend with its bundled plugins approved: `verify` is then
    about the `.pth` files only (an empty allowlist fails it on its own)."""
    approved = backend.dihya("plugins", "approve", "example", "markdown-docs")
    assert approved.returncode == 0, approved.stderr
    return backend


def test_fresh_venv_verifies_with_setuptools_pth_acknowledged(backend) -> None:
    verify = backend.dihya("plugins", "verify", "--json")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    rows = pth_rows(verify)
    assert set(rows) == {"distutils-precedence.pth"}, rows
    row = rows["distutils-precedence.pth"]
    assert (row["status"], row["ok"], row["acknowledged_by"]) == ("acknowledged", True, "builtin")
    assert row["owner"] == "setuptools" and len(str(row["sha256"])) == 64


def test_unknown_pth_fails_verify_until_acknowledged_and_again_when_edited(
        backend, tmp_path: Path) -> None:
    with pth_wheel_installed(backend, tmp_path) as pth:
        verify = backend.dihya("plugins", "verify", "--json")
        assert verify.returncode == 1
        row = pth_rows(verify)[PTH]
        assert (row["status"], row["reason"], row["ok"]) == (
            "unacknowledged", "unacknowledged-pth", False)
        assert (row["owner"], row["path"]) == (DIST, str(pth))
        listed = backend.json("plugins", "list", "--json")
        assert all(PTH in {p["file"] for p in r["pth"]} for r in listed)  # type: ignore[union-attr]
        shown = backend.json("plugins", "show", "example", "--json")
        assert {p["file"]: p["owner"] for p in shown["pth"]}[PTH] == DIST  # type: ignore[index]
        text = backend.dihya("plugins", "list")
        assert f"{pth} ({DIST}) runs code at interpreter start" in text.stderr

        ack = backend.dihya("plugins", "acknowledge-pth", PTH, "--note", "reviewed, TICKET-1")
        assert ack.returncode == 0, ack.stderr
        config = backend.config.read_text()
        assert config.startswith("# operator note: keep me\n") and "TICKET-1" in config
        verify = backend.dihya("plugins", "verify", "--json")
        assert verify.returncode == 0, verify.stdout
        assert pth_rows(verify)[PTH]["acknowledged_by"] == "config"

        pth.write_bytes(HOOK + b"import this\n")  # edited after the acknowledgement
        verify = backend.dihya("plugins", "verify")
        assert verify.returncode == 1
        assert f"FAIL pth: {pth} ({DIST})" in verify.stdout


def test_acknowledging_an_unknown_pth_names_those_that_run_code(backend) -> None:
    result = backend.dihya("plugins", "acknowledge-pth", "no-such.pth")
    assert result.returncode == 1 and "distutils-precedence.pth" in result.stderr
