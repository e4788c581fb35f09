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

from support import pipfork

ROOT = Path(__file__).resolve().parents[2]
TODO = ROOT / "examples" / "needs" / "todo.json"

pytestmark = pytest.mark.slow


def _printed_commands(output: str) -> list[str]:
    lines = output.splitlines()
    return [line.strip() for line in lines[lines.index("next:") + 1:] if line.strip()]


def test_the_printed_author_loop_runs_as_printed(backend, tmp_path: Path) -> None:
    """`dihya plugins new` in a directory outside any checkout, then exactly the commands it
    printed, in one shell: a venv, the core wheel it made plus the plugin editable, pytest
    (the sandbox test runs the plugin from its source tree), then tox from that venv (the
    plugin from its wheel, each test once, and ruff). The backend itself still refuses the
    editable install."""
    home = tmp_path / "author-home"  # the backend fixture has `home`
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIHYA_", "TOX_"))}
    env.update(XDG_CACHE_HOME=str(home / ".cache"), XDG_CONFIG_HOME=str(home / ".config"))
    new = subprocess.run([str(backend.venv / "bin" / "dihya"), "plugins", "new", "hello"],
                         cwd=home, env=env, capture_output=True, text=True, timeout=600)
    assert new.returncode == 0, new.stderr
    assert "warning" not in new.stderr, new.stderr
    commands = _printed_commands(new.stdout)
    wheel = next((home / ".cache" / "dihya" / "wheels").glob("dihya_core-*.whl"))
    assert commands[0] == "cd dihya-plugin-hello" and str(wheel) in commands[2]
    assert not [c for c in commands if c.split()[0] in ("tox", "pytest", "pip")], commands
    assert f"core = {wheel}" in (home / "dihya-plugin-hello" / "tox.ini").read_text()
    start = time.perf_counter()
    ran = subprocess.run(["bash", "-euo", "pipefail", "-c", "\n".join(commands)], cwd=home,
                         env=env, capture_output=True, text=True, timeout=1200)
    elapsed = time.perf_counter() - start
    assert ran.returncode == 0, f"{ran.stdout[-5000:]}\n{ran.stderr[-3000:]}"
    assert ran.stdout.count("4 passed") == 2, ran.stdout[-4000:]  # pytest, then tox's `py` once
    assert "py: OK" in ran.stdout and "lint: OK" in ran.stdout
    assert "core-oldest" not in ran.stdout and "core-newest" not in ran.stdout
    venv = home / "dihya-plugin-hello" / ".venv"
    config = home / "dihya.toml"
    config.write_text("[plugins]\n")
    refused = subprocess.run([str(venv / "bin" / "dihya"), "--config", str(config), "plugins",
                              "approve", "hello"], cwd=home, env=env, capture_output=True,
                             text=True, timeout=300)
    assert refused.returncode == 1 and "editable install" in refused.stderr + refused.stdout
    print(f"\nauthor loop as printed ({len(commands)} commands): {elapsed:.1f} s")


def test_a_bundled_plugin_copied_out_of_the_repository_runs_its_tox(backend,
                                                                   tmp_path: Path) -> None:
    """plugins/*/tox.ini names no path of this checkout: a copy elsewhere runs it with the
    core from `dihya plugins core-wheel`."""
    for tox_ini in (ROOT / "plugins").glob("*/tox.ini"):
        settings = [ln for ln in tox_ini.read_text().splitlines() if not ln.startswith("#")]
        assert not [ln for ln in settings if "../.." in ln or "toxinidir}/.." in ln], tox_ini
    copy = tmp_path / "elsewhere" / "example-plugin"
    shutil.copytree(ROOT / "plugins" / "example-plugin", copy,
                    ignore=shutil.ignore_patterns(".tox", "build", "*.egg-info", "__pycache__"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIHYA_", "TOX_"))}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    made = subprocess.run([str(backend.venv / "bin" / "dihya"), "plugins", "core-wheel"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert made.returncode == 0, made.stderr
    env["DIHYA_CORE"] = made.stdout.strip()
    tox = subprocess.run([*_tox(), "--workdir", str(tmp_path / "toxwork")], cwd=copy, env=env,
                         capture_output=True, text=True, timeout=1200)
    assert tox.returncode == 0, tox.stdout[-4000:] + tox.stderr[-2000:]
    assert "py: OK" in tox.stdout


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
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
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
    # 2. its tox: the tests once against the core (here: DIHYA_CORE, the core wheel), lint
    tox = author(*_tox(), "--workdir", str(tmp_path / "toxwork"), cwd=project)
    green = time.perf_counter() - start
    assert "py: OK" in tox.stdout and "lint: OK" in tox.stdout
    assert tox.stdout.count("4 passed") == 1, tox.stdout[-3000:]
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
        pipfork.run([str(backend.python), "-m", "pip", "uninstall", "--yes", "--quiet",
                        "dihya-plugin-hello"], check=False)
    print(f"\nplugin author kit: {commands} author commands; green tox {green:.1f} s; "
          f"plugin running in a generation {running:.1f} s")
    assert commands == 3
    assert running < 300
