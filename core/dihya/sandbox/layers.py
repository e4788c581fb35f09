"""The isolation layers of a sandbox worker, in one place: what exists and what is in force.

A sandbox-mode plugin runs in its own worker process, started by the backend with
`subprocess.Popen` (never fork or multiprocessing). Two sides:

* `launch()` (dihya.sandbox.outer, parent, before `Popen`): a scrubbed environment,
  `python -I -S` with an explicit import path, a bubblewrap filesystem view holding only
  what the interpreter and the plugin need, private namespaces, and an unprivileged user
  when the backend is root;
* `confine()` (dihya.sandbox.inner, worker, first thing after the interpreter started):
  rlimits, no-new-privs, Landlock and seccomp, all before any plugin code is imported.

`probe()` says which layers this machine allows; a layer that `probe()` calls available
and then fails to apply raises `SandboxSetupError`, never a silent downgrade. Python audit
hooks are not a layer (bypassable from Python); `-I -S` is hygiene that also keeps `.pth`
files and `sitecustomize` from running in a worker.
"""

from __future__ import annotations

import functools

from dihya.sandbox.inner import (
    DENIED_SYSCALLS,
    confine,
    landlock_abi,
    probe_landlock,
    probe_seccomp,
)
from dihya.sandbox.outer import launch, probe_outer, probe_user, sandbox_user
from dihya.sandbox.policy import (
    AVAILABLE,
    SYSTEM_READ_ONLY_PATHS,
    SandboxPolicy,
    SandboxSetupError,
)

__all__ = [
    "AVAILABLE",
    "DENIED_SYSCALLS",
    "SYSTEM_READ_ONLY_PATHS",
    "SandboxPolicy",
    "SandboxSetupError",
    "confine",
    "landlock_abi",
    "launch",
    "probe",
    "sandbox_user",
]


@functools.cache
def probe() -> dict[str, str]:
    """Which layers this machine allows: {"user", "bwrap", "unshare", "rlimits", "landlock",
    "seccomp", "env"} -> "available" or "unavailable: why". Cached per process.

    bwrap and unshare are tried for real (this interpreter started under them as a worker
    would be, as the sandbox user when the backend is root), so "available" means launch()
    will use them successfully.
    """
    return {
        "user": probe_user(),
        "bwrap": probe_outer("bwrap"),
        "unshare": probe_outer("unshare"),
        "rlimits": AVAILABLE,
        "landlock": probe_landlock(),
        "seccomp": probe_seccomp(),
        "env": AVAILABLE,
    }
