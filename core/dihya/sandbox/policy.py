"""What one sandbox worker may do: the policy both sides of its start read, and its errors.

The parent builds a `SandboxPolicy`, `launch()` (dihya.sandbox.outer) turns it into the
process's outer walls and the worker applies it to itself with `confine()`
(dihya.sandbox.inner). It crosses to the worker as JSON (`attrs.asdict`); this module needs
only the standard library and attrs, so the worker imports it before anything else.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import attrs

from dihya.reasons import FixedReasonError, Reason

AVAILABLE: Final = "available"
Outer = Literal["auto", "bwrap", "unshare", "none"]

# What the interpreter needs besides its own prefix: shared libraries (libffi, libssl,
# libz...), the loader's cache and local time. Part of every worker's filesystem view and
# readable under Landlock; a path that does not exist is skipped.
SYSTEM_READ_ONLY_PATHS: Final = ("/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/local/lib",
                                 "/etc/ld.so.cache", "/etc/localtime", "/usr/share/zoneinfo")
SANDBOX_USERS: Final = ("dihya-sandbox", "nobody")
SAFE_PATH: Final = "/usr/bin:/bin"


class SandboxSetupError(FixedReasonError, RuntimeError):
    """A layer could not be applied, or the worker would run with less than promised."""

    REASON = Reason.SANDBOX_START_FAILED


def _tuple_of_str(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value)


@attrs.frozen
class SandboxPolicy:
    """What one worker may do. JSON round-trips through `attrs.asdict` (lists become tuples)."""

    scratch_dir: str                 # the only writable directory (0700, made by the parent)
    # what the worker may read: with bubblewrap, the only host paths it can see at all
    read_only_paths: tuple[str, ...] = attrs.field(converter=_tuple_of_str)
    address_space_bytes: int = 512 * 1024**2
    cpu_seconds: int = 30
    file_size_bytes: int = 16 * 1024**2
    # with bubblewrap: the scratch dir is a private tmpfs of this size, gone when the worker
    # exits (nothing it writes reaches the host's disk); None binds the host directory
    scratch_bytes: int | None = None
    open_files: int = 64
    processes: int = 64              # RLIMIT_NPROC (only meaningful for a non-root user)
    network: bool = False            # always False today
    # run as an unprivileged user when the backend is root; False keeps the backend's uid
    # (only the trusted bytecode warm-up, which runs no plugin code, asks for that)
    switch_user: bool = True
    # when the backend is root and no unprivileged user can run the worker: False refuses
    # to start it, True runs it as root with every capability dropped (`[sandbox] allow_root`)
    allow_root: bool = False
    outer: Outer = "auto"            # "auto": bwrap, else unshare, else none (with a warning)
