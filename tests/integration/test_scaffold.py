"""The plugin author kit end to end: `dihya plugins new`, the new project's own tox run (its
tests against the core wheel, in-process and in a real sandbox, and ruff), its wheel, then
the operator's install, approval and a generation in which the new plugin runs.

Prints the number of author commands and the time from `dihya plugins new` to a green tox
run and to the plugin running in a generation (figures in docs/benchmarks.md).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TODO = ROOT / "examples" / "needs" / "todo.json"

pytestmark = pytest.mark.slow


def _tox() -> list[str]:
    try:
        import tox  # noqa: F401
    except ImportError:
        found = shutil.which("tox")
        if found is None:
            pytest.skip("tox is not installed (the integration tox env installs it)")
        return [found]
    return [sys.executable, "-m", "tox"]


def test_scaffold_to_a_plugin_running_in_a_generation(backend, wheelhouse: Path,
                                                      tmp_path: Path) -> None:
    core_wheel = next(wheelhouse.glob("dihya_core-*.whl"))
    project = tmp_path / "author" / "dihya-plugin-hello"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIHYA_", "TOX_"))}
    env["DIHYA_CORE"] = str(core_wheel)
    commands = 0

    def author(*cmd: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        nonlocal commands
        commands += 1
        result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, f"{cmd}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        return result

    start = time.perf_counter()
    # 1. scaffold
    project.parent.mkdir(parents=True)
    out = author(str(backend.venv / "bin" / "dihya"), "plugins", "new", "hello",
                 "--dir", str(project), "--author", "Jane Doe", cwd=project.parent)
    assert "wrote dihya-plugin-hello (10 files)" in out.stdout
    # 2. its tox: tests against the oldest and newest core (here: the core wheel), lint
    tox = author(*_tox(), "--workdir", str(tmp_path / "toxwork"), cwd=project)
    green = time.perf_counter() - start
    assert "core-oldest: OK" in tox.stdout and "core-newest: OK" in tox.stdout
    assert "lint: OK" in tox.stdout
    assert tox.stdout.count("4 passed") == 2, tox.stdout[-3000:]
    # 3. its wheel
    author(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", "dist", ".",
           cwd=project)
    wheel = next((project / "dist").glob("dihya_plugin_hello-0.1.0-*.whl"))

    # the operator: install, approve, generate
    backend.pip("--no-deps", str(wheel))
    try:
        approved = backend.dihya("plugins", "approve", "hello")
        assert approved.returncode == 0, approved.stderr
        fingerprint = backend.dihya("plugins", "fingerprint", str(wheel)).stdout.strip()
        assert fingerprint in approved.stdout  # the wheel's fingerprint is the installed one
        outdir = tmp_path / "generated"
        gen = backend.dihya("generate", str(TODO), "-o", str(outdir), "--json")
        running = time.perf_counter() - start
        assert gen.returncode == 0, gen.stderr
        report = json.loads(gen.stdout)
        hooks = {(h["name"], h["hook"]): h["status"] for h in report["plugins"]}
        assert hooks[("hello", "after_generation")] == "ok"
        assert (outdir / "docs" / "hello.md").read_text() == (
            "# todo\n\nGenerated with the hello plugin.\n")
        rows = backend.rows()
        assert rows["hello"]["status"] == "active" and rows["hello"]["mode"] == "sandbox"
    finally:
        subprocess.run([str(backend.python), "-m", "pip", "uninstall", "--yes", "--quiet",
                        "dihya-plugin-hello"], check=False)
    print(f"\nplugin author kit: {commands} author commands; green tox {green:.1f} s; "
          f"plugin running in a generation {running:.1f} s")
    assert commands == 3
    assert running < 300
