"""Sandbox workers read a shared bytecode cache that only the backend's warm-up writes."""

from __future__ import annotations

import json
import os
import shutil
import sysconfig
from pathlib import Path

import pytest
from sandbox_support import hook, sandboxed

from dihya.pipeline import run_generation
from dihya.sandbox import bytecode

PROBE = hook('''import importlib.util, json, os, sys
prefix = sys.pycache_prefix or ""
try:
    with open(os.path.join(prefix, "planted.pyc"), "wb") as fh:
        fh.write(b"x")
    wrote = "yes"
except OSError as exc:
    wrote = type(exc).__name__
cached = sys.modules["dihya.sandbox.worker"].__cached__ or ""
try:  # the core's bytecode, written by the warm-up, read by this worker (another user)
    with open(cached, "rb") as fh:
        readable = fh.read(4) == importlib.util.MAGIC_NUMBER
except OSError as exc:
    readable = type(exc).__name__
# the bytecode of a core dependency the warm-up compiles (jsonschema: every worker of a
# plugin with actions runs it), which every other worker would then run: not rewritable
source = importlib.util.find_spec("jsonschema").origin
target = importlib.util.cache_from_source(source)
try:
    with open(target, "r+b") as fh:
        fh.write(fh.read(4))
    poisoned = "yes"
except OSError as exc:
    poisoned = type(exc).__name__
code["cache.json"] = json.dumps({"prefix": prefix, "wrote": wrote, "cached": cached,
                                 "readable": readable, "target": target,
                                 "poisoned": poisoned})
return code''')


def test_a_worker_reads_the_shared_cache_and_cannot_write_it(plugin_site, needs,
                                                            closing) -> None:
    snap, names = sandboxed(plugin_site, {"probe": PROBE})
    closing(snap)
    record = snap.get(names["probe"])
    assert record.active, record.message
    cache = bytecode.cache_dir()
    assert cache is not None
    seen = json.loads(run_generation(needs, snap).files["cache.json"])
    if "bwrap" not in " ".join(record.isolation) and os.geteuid() != 0:
        pytest.skip("without bwrap or a user switch the worker keeps a private cache")
    assert seen["prefix"] == str(cache)
    assert seen["wrote"] != "yes", "a sandboxed plugin wrote into the shared bytecode cache"
    assert not (cache / "planted.pyc").exists()
    # the worker compiled its plugin's modules in memory: none of them reached the cache
    plugin_dir = str(plugin_site.site).lstrip("/")
    assert not (cache / plugin_dir).exists()
    # the core's own modules are there, written by the warm-up, and the worker (another
    # user, or a read-only view) can read them: else it compiles them at every start
    assert any(cache.rglob("worker*.pyc"))
    assert seen["cached"].startswith(str(cache)), seen
    assert seen["readable"] is True, f"the worker cannot read the shared cache: {seen}"
    # the core's dependencies a worker may import for its plugin are warmed too (issue
    # #16): jsonschema's bytecode is there, and the sandboxed plugin cannot rewrite it
    assert seen["target"].startswith(str(cache)) and Path(seen["target"]).is_file(), seen
    assert seen["poisoned"] != "yes", "a sandboxed plugin rewrote the shared bytecode"
    assert any(cache.rglob("flask_api*.pyc")) and any(cache.rglob("environment*.pyc"))


def test_the_warm_up_leaves_its_cache_readable_and_repairs_a_private_one(
        tmp_path: Path) -> None:
    """Workers run as another user: what the warm-up writes must be readable by others
    and writable by nobody else, including a cache an earlier version left 0700/0600."""
    cache = tmp_path / "worker-pycache"
    cache.mkdir(mode=0o755)
    assert bytecode._run_warm_up(str(cache))
    entries = [p for p in cache.rglob("*")]
    assert entries
    for path in entries:
        assert path.stat().st_mode & 0o777 == (0o755 if path.is_dir() else 0o644), path
    # as an earlier warm-up left it: private directories and files
    for path in entries:
        path.chmod(0o700 if path.is_dir() else 0o600)
    (cache / "link").symlink_to(tmp_path)  # never followed, never changed
    assert bytecode._run_warm_up(str(cache))
    for path in entries:
        assert path.stat().st_mode & 0o777 == (0o755 if path.is_dir() else 0o644), path
    assert tmp_path.stat().st_mode & 0o777 != 0o644


def test_an_unsafe_cache_directory_is_not_used(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = bytecode.cache_dir()
    assert path is not None and path.stat().st_mode & 0o777 == 0o755
    path.chmod(0o775)  # group-writable: another user could plant bytecode
    assert bytecode.cache_dir() is None
    path.chmod(0o755)
    assert bytecode.cache_dir() == path
    shutil.rmtree(path)
    path.symlink_to(tmp_path)  # a link placed where the cache should be
    assert bytecode.cache_dir() is None


def test_the_warm_up_runs_no_pth_file_and_writes_only_its_cache(tmp_path: Path) -> None:
    """The warm-up is started like a worker (`-I -S`, the view, Landlock, seccomp): a
    code-running .pth file in site-packages never runs in it."""
    token = f"dihya-warm-{os.getpid()}"
    cache = tmp_path / token / "worker-pycache"
    cache.mkdir(parents=True, mode=0o755)
    site = Path(sysconfig.get_paths()["purelib"])
    pth = site / f"zz-{token}.pth"
    # only acts in a process whose HOME is this test's cache (the warm-up's HOME)
    pth.write_text(f"import os; h = os.environ.get('HOME', ''); '{token}' in h and "
                   f"open(os.path.join(h, 'pth-ran'), 'w').close()\n")
    try:
        assert bytecode._run_warm_up(str(cache))
    finally:
        pth.unlink()
    assert not (cache / "pth-ran").exists(), "a .pth file ran in the bytecode warm-up"
    assert any(cache.rglob("worker*.pyc")), "the warm-up filled its cache"
