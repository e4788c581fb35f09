"""`make demo` says what it does: before it runs apt-get as root and before each long step; it
writes its config with `dihya config init` and ends with `dihya doctor` (read from the
Makefile itself, and from what make would run: `make -n`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAKEFILE = (ROOT / "Makefile").read_text()


def recipe(target: str) -> list[str]:
    lines = MAKEFILE.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    body = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        body.append(line.strip())
    return body


@pytest.mark.parametrize(("target", "package"), [("sandbox-tools", "bubblewrap"),
                                                 ("browser", "chromium")])
def test_apt_get_is_announced_before_it_runs(target: str, package: str) -> None:
    body = "\n".join(recipe(target))
    said = body.find(f'echo "== installing {package} with apt-get (as root')
    ran = body.find(f"apt-get install -y -qq {package}")
    assert 0 <= said < ran, body


def test_demo_announces_its_long_steps_and_ends_with_doctor() -> None:
    body = recipe("demo")
    pip = [i for i, line in enumerate(body) if "pip install" in line]
    assert pip and all(body[i - 1].startswith('@echo "== ') for i in pip), body
    assert body[-1] == "$(DIHYA) doctor"
    assert body[-2].startswith('@echo "== checking')
    assert any("$(DIHYA) config init $(DEMO)/dihya.toml" in line
               for line in recipe("demo-config"))
    assert "printf" not in "\n".join(recipe("demo-config"))


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_would_run_doctor_last() -> None:
    out = subprocess.run(["make", "-n", "--no-print-directory", "demo"], cwd=ROOT,
                         capture_output=True, text=True, check=False, timeout=60)
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert lines[-1].endswith("dihya --config demo/dihya.toml doctor"), out.stdout
