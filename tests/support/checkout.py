"""Wheels of dihya-core and the bundled plugins built from this checkout, built once per
source state.

`checkout_wheels(out)` puts a wheel of each project (the core, every `plugins/*`) in `out`.
With `DIHYA_TEST_WHEEL_CACHE=DIR` (tox sets `.tox/checkout-wheels`) they are built once and
kept in `DIR/<key>/`, where the key is a SHA-256 of the files a build reads (each project's
`pyproject.toml`, README, licence and source tree, the Python version and this recipe's
version): the envs of one tox run that need them (integration, reload-load, console-e2e)
share one build, and any changed source file gives a new key, so a stale wheel is never
handed out. An entry is published whole (built in a private directory, renamed into place;
a concurrent builder's entry wins and ours is dropped) with a manifest of its wheels'
SHA-256; every wheel copied out is checked against it after the copy, and an entry that
does not match (truncated, replaced, tampered) is removed and rebuilt. Without the variable
every call builds afresh, as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from support import pipfork

ROOT = Path(__file__).resolve().parents[2]
RECIPE = "checkout-wheels-v1"
MANIFEST = "wheels.json"
SKIP_DIRS = {"__pycache__", "build", "dist", ".tox", ".git", ".venv", ".mypy_cache",
             ".ruff_cache", ".pytest_cache"}
STALE_S = 3600  # entries of other keys untouched for this long are pruned


def projects(root: Path = ROOT) -> list[Path]:
    return [root, *sorted(p.parent for p in (root / "plugins").glob("*/pyproject.toml"))]


def _inputs(project: Path) -> Iterator[Path]:
    """The files a build of `project` reads: metadata files and its source tree."""
    for name in ("pyproject.toml", "setup.py", "setup.cfg", "MANIFEST.in"):
        if (project / name).is_file():
            yield project / name
    for pattern in ("README*", "LICEN[CS]E*"):
        yield from sorted(p for p in project.glob(pattern) if p.is_file())
    for top in ("core", "src"):
        for dirpath, dirnames, filenames in os.walk(project / top):
            dirnames[:] = sorted(d for d in dirnames
                                 if d not in SKIP_DIRS and not d.endswith(".egg-info"))
            for name in sorted(filenames):
                if not name.endswith((".pyc", ".pyo")):
                    yield Path(dirpath) / name


def source_key(root: Path = ROOT) -> str:
    """SHA-256 over the relative path, size and content of every build input."""
    digest = hashlib.sha256(f"{RECIPE}\n{sys.version_info[:2]}\n".encode())
    for project in projects(root):
        for path in _inputs(project):
            data = path.read_bytes()
            rel = path.relative_to(root).as_posix()
            digest.update(f"{rel}\0{len(data)}\0".encode())
            digest.update(data)
    return digest.hexdigest()


def build(out: Path, root: Path = ROOT) -> list[Path]:
    """`pip wheel --no-deps` of every project into `out` (no cache)."""
    out.mkdir(parents=True, exist_ok=True)
    pipfork.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out),
                 *map(str, projects(root))], check=True)
    return sorted(out.glob("*.whl"))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _copy_out(entry: Path, out: Path) -> list[Path] | None:
    """The entry's wheels copied into `out` and checked there; None if it does not match."""
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
        wheels = manifest["wheels"]
        assert isinstance(wheels, dict) and wheels
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        return None
    copied = []
    for name, digest in sorted(wheels.items()):
        if "/" in name or not name.endswith(".whl"):
            return None
        target = out / name
        try:
            shutil.copyfile(entry / name, target)
        except OSError:
            return None
        if _sha256(target) != digest:
            target.unlink()
            return None
        copied.append(target)
    return copied


Builder = Callable[[Path, Path], list[Path]]


def _publish(cache: Path, key: str, root: Path, builder: Builder) -> None:
    """Build into a private directory, then rename it to `cache/key` (first one wins)."""
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=cache))
    try:
        wheels = builder(work, root)
        manifest = {"key": key, "wheels": {w.name: _sha256(w) for w in wheels}}
        (work / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        with contextlib.suppress(OSError):  # a concurrent build got there first: keep theirs
            work.rename(cache / key)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _prune(cache: Path, key: str) -> None:
    now = time.time()
    for entry in cache.iterdir():
        if entry.name != key and not entry.name.startswith(".") and entry.is_dir():
            try:
                stale = now - entry.stat().st_mtime > STALE_S
            except OSError:
                continue
            if stale:
                shutil.rmtree(entry, ignore_errors=True)


def checkout_wheels(out: Path, cache: Path | None = None, root: Path = ROOT,
                    builder: Builder = build) -> list[Path]:
    """Wheels of the core and every bundled plugin in `out`: from the cache when it holds
    this source state's build intact, else built (and published to the cache)."""
    if cache is None:
        where = os.environ.get("DIHYA_TEST_WHEEL_CACHE")
        if not where:
            return builder(out, root)
        cache = Path(where)
    out.mkdir(parents=True, exist_ok=True)
    key = source_key(root)
    entry = cache / key
    for attempt in range(3):
        if entry.is_dir():
            copied = _copy_out(entry, out)
            if copied is not None:
                os.utime(entry)
                return copied
            shutil.rmtree(entry, ignore_errors=True)  # damaged: rebuilt below
        if attempt < 2:
            _publish(cache, key, root, builder)
            _prune(cache, key)
    raise RuntimeError(f"the checkout wheel cache {cache} keeps failing its checks")
