"""The shell blocks of README.md and the guides marked `<!-- runnable -->` run as written.

Each page's marked blocks run in order, as one `bash -euo pipefail` script (so an
`export` in one block holds for the next, as for a reader pasting them), in a temp
directory set up as `make demo` leaves the checkout: `.venv` (the core and both bundled
plugins installed from wheels), `examples/`, `demo/dihya.toml` approving both. No network,
no root; HOME and the XDG directories are private to the run.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from support.docblocks import PAGES, ROOT, runnable_blocks

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("page", [p for p in PAGES if runnable_blocks(p)],
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_runnable_blocks_run(page: Path, backend, tmp_path: Path) -> None:
    work = tmp_path / "checkout"
    (work / "demo").mkdir(parents=True)
    (work / ".venv").symlink_to(backend.venv)
    (work / "examples").symlink_to(ROOT / "examples")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIHYA_", "XDG_"))}
    env.update(HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "home/.config"),
               XDG_CACHE_HOME=str(tmp_path / "home/.cache"))
    config = work / "demo" / "dihya.toml"
    config.write_text("[plugins]\n")
    approved = subprocess.run([str(backend.venv / "bin" / "dihya"), "--config", str(config),
                               "plugins", "approve", "example", "markdown-docs"], cwd=work,
                              env=env, capture_output=True, text=True, timeout=300)
    assert approved.returncode == 0, approved.stderr
    script = []
    for line, block in runnable_blocks(page):
        script.append(f"echo '>>> {page.name}:{line}' >&2")
        script.append(block)
    ran = subprocess.run(["bash", "-euo", "pipefail", "-c", "\n".join(script)], cwd=work,
                         env=env, capture_output=True, text=True, timeout=900)
    where = [ln for ln in ran.stderr.splitlines() if ln.startswith(">>> ")]
    assert ran.returncode == 0, (f"the block at {where[-1][4:] if where else '?'} failed "
                                 f"(exit {ran.returncode}):\n{ran.stdout[-3000:]}\n"
                                 f"{ran.stderr[-3000:]}")
