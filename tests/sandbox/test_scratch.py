"""Scratch directories are removed when a worker stops, and swept when a crashed backend
left them behind; a live backend's are never touched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import attrs
from sandbox_support import hook, sandboxed

from dihya.pipeline import run_generation
from dihya.sandbox.scratch import make_scratch, sweep_orphans

WRITE_IN_SCRATCH = hook('import os\nopen(os.path.join(os.environ["TMPDIR"], "big"), "w")'
                        '.write("x" * 1000)\ncode["tmp.txt"] = os.environ["TMPDIR"]\nreturn code')


def test_closing_the_snapshot_removes_scratch(plugin_site, needs) -> None:
    snap, _names = sandboxed(plugin_site, {"w": WRITE_IN_SCRATCH})
    try:
        scratch = run_generation(needs, snap).files["tmp.txt"]
        assert os.path.isdir(scratch) and os.path.basename(scratch).startswith(
            f"dihya-sbx-{os.getpid()}.")
    finally:
        snap.close()
    assert not os.path.exists(scratch)


def test_sweep_removes_only_dirs_of_processes_that_are_gone(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    mine = Path(make_scratch("live"))  # this process's, with its true start time
    try:
        orphan = tmp_path / f"dihya-sbx-{gone.pid}.123-old-abcd"
        reused = tmp_path / f"dihya-sbx-{os.getpid()}.1-reused-abcd"  # same pid, other start
        alive = tmp_path / mine.name
        other = tmp_path / "dihya-sbx-test-abcd"  # not ours to judge
        for path in (orphan, reused, alive, other):
            (path / "sub").mkdir(parents=True)
            (path / "sub" / "file").write_text("x")
        removed = sweep_orphans(str(tmp_path))
        assert sorted(removed) == sorted([str(orphan), str(reused)])
        assert alive.exists() and other.exists()
    finally:
        mine.rmdir()


def test_a_killed_backend_leaves_scratch_that_the_next_start_sweeps(plugin_site, needs,
                                                                    tmp_path: Path) -> None:
    snap, names = sandboxed(plugin_site, {"w": WRITE_IN_SCRATCH})
    snap.close()  # approved and installed; a separate backend process runs it
    backend = textwrap.dedent(f"""
        import json, sys
        sys.path[:0] = {plugin_site.path[:1]!r}
        from dihya.config import load_config
        from dihya.pipeline import run_generation
        from dihya.registry import build_registry
        config = load_config(__import__("pathlib").Path({str(tmp_path / "dihya.toml")!r}))
        snap = build_registry(config)
        result = run_generation({needs!r}, snap)
        print(json.dumps(result.files["tmp.txt"]), flush=True)
        sys.stdin.read()  # wait to be killed
    """)
    entry = plugin_site.entry(names["w"], mode="sandbox")
    fields = attrs.asdict(entry)
    (tmp_path / "dihya.toml").write_text("[[plugins.allow]]\n" + "".join(
        f"{k} = {json.dumps(fields[k])}\n"
        for k in ("name", "distribution", "version", "fingerprint", "mode")))
    tests = str(Path(__file__).resolve().parents[1])
    proc = subprocess.Popen([sys.executable, "-c", backend], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=tests,
                            env={**os.environ, "PYTHONPATH": tests})
    assert proc.stdout is not None
    scratch = json.loads(proc.stdout.readline())
    assert os.path.isdir(scratch)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30  # the worker dies with its backend (bwrap) or idles
    while os.path.isdir(scratch) and time.monotonic() < deadline:
        if str(scratch) in sweep_orphans(tempfile.gettempdir()):
            break
        time.sleep(0.05)
    assert not os.path.exists(scratch)
