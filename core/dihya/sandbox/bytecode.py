"""A bytecode cache that sandbox workers read and never write, so they start fast.

A worker runs `python -I -X pycache_prefix=DIR`: it must never use `__pycache__` beside
the sources (a forged `.pyc` there would run instead of the verified source) nor write
where another worker reads. With a fresh DIR per worker, every start compiled the
standard library, the core and its dependencies again (≈ 0.35 s of a ≈ 0.5 s start).

This module keeps one cache per backend user (`$XDG_CACHE_HOME/dihya/worker-pycache-UID`,
mode 0755, owned by that user and writable by nobody else). It is filled by a trusted
warm-up process — the same interpreter, importing what a worker imports before it loads
its plugin, and no plugin code — once per backend process. The warm-up is started and
confined like a worker (`python -I -S`, so no `.pth` file runs; the same filesystem view,
Landlock and seccomp) except that it keeps the backend's uid, since it writes the cache,
and may write only there. Workers get the cache as their
`pycache_prefix` only where they cannot write it (inside bwrap's read-only root, or as a
different user); they compile their plugin's own modules in memory (the write fails
silently). CPython checks each cached file against its source's mtime and size, as it
does for any `.pyc`.
"""

from __future__ import annotations

import os
import stat
import subprocess
import threading
from pathlib import Path

import attrs

_lock = threading.Lock()
_warmed: dict[str, bool] = {}


def cache_dir() -> Path | None:
    """The worker bytecode cache of this user, created if needed; None if it is unsafe
    (owned by someone else, writable by group or others, a link) or cannot be made."""
    from dihya.gate.loader import owned_dir, user_cache_path

    path = user_cache_path("worker-pycache")
    return path if owned_dir(path, 0o755, 0o022) else None


def warm_cache() -> str | None:
    """The cache directory, filled by one warm-up run per process; None when unusable."""
    path = cache_dir()
    if path is None:
        return None
    key = str(path)
    with _lock:
        if key not in _warmed:
            _warmed[key] = _run_warm_up(key)
        return key if _warmed[key] else None


def _run_warm_up(prefix: str) -> bool:
    from dihya.sandbox.outer import launch
    from dihya.sandbox.policy import SandboxPolicy, SandboxSetupError
    from dihya.sandbox.start import import_path, python_argv, read_only_paths

    policy = SandboxPolicy(scratch_dir=prefix, read_only_paths=read_only_paths(),
                           switch_user=False)
    spec = {"warm": True, "sys_path": import_path(), "policy": attrs.asdict(policy)}
    try:
        argv, env, kwargs, _, _ = launch(python_argv(spec, prefix), policy)
        # readable by the workers from its first write: a worker runs as another user
        # (`launch` gives sandbox processes 0o077, which made the warm-up's directories
        # 0700 and every worker compile the standard library and the core again)
        kwargs["umask"] = 0o022
        done = subprocess.run(argv, env=env, cwd=prefix, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=60, check=False, close_fds=True, **kwargs)
    except (OSError, subprocess.TimeoutExpired, SandboxSetupError):
        return False
    if done.returncode != 0:
        return False
    readable_by_workers(prefix)
    return True


def readable_by_workers(prefix: str) -> int:
    """Make what the warm-up wrote under `prefix` readable (never writable) by others:
    directories 0755, files 0644. Repairs a cache written with a private umask (before
    this was fixed). Only this user's own plain files and directories are touched, links
    never followed. Returns how many modes changed."""
    uid = os.getuid()
    changed = 0
    for dirpath, dirnames, filenames in os.walk(prefix):
        for name, want in [*((d, 0o755) for d in dirnames), *((f, 0o644) for f in filenames)]:
            try:  # opened without following a link, checked and changed through the fd
                fd = os.open(os.path.join(dirpath, name),
                             os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                st = os.fstat(fd)
                if (st.st_uid == uid and (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode))
                        and stat.S_IMODE(st.st_mode) != want):
                    os.fchmod(fd, want)
                    changed += 1
            except OSError:
                pass
            finally:
                os.close(fd)
    return changed


def warm_imports() -> None:
    """What a worker imports and reads before its plugin's code: run by the warm-up."""
    os.umask(0o022)  # the cache's directories: writable by this user only
    import ctypes  # noqa: F401  # seccomp and Landlock go through ctypes
    import ctypes.util  # noqa: F401

    from dihya.gate.decide import inspect_files  # noqa: F401
    from dihya.gate.discovery import discover
    from dihya.gate.loader import load_plugins  # noqa: F401
    from dihya.plugin import DEFAULT_GROUP
    from dihya.pluginlog import capture  # noqa: F401
    from dihya.sandbox import inner, policy  # noqa: F401

    for plugin in discover(DEFAULT_GROUP)[:1]:  # the metadata parsers, no plugin import
        _ = plugin.version
    # stevedore (the loader), and the core's own modules a worker may import for its
    # plugin: the check of an action's input schema (jsonschema,
    # `dihya.plugin._action_problems`), the needs and the core generator (Jinja2) of the
    # public API (`dihya.check_needs`, `dihya.generate`...), which every start of such a
    # worker compiled otherwise (≈ 0.2-0.4 s of CPU, issue #16)
    import jsonschema  # noqa: F401
    import stevedore.named  # noqa: F401

    import dihya.generator.flask_api  # noqa: F401
    import dihya.needs  # noqa: F401
