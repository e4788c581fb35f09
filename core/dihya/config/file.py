"""The config file on disk: where it really lives, the edit lock, atomic replacement, exposure.

Edits of the backend config are transactions: `edit_lock` takes an exclusive `flock` on a
lock file beside the real config (`.dihya.toml.lock`, left in place), the edit re-reads the
file, applies its change and `replace_atomically` writes it (a temporary file in the same
directory, fsync, rename, fsync of the directory). The lock is not on the config itself:
the rename replaces that file, so a lock held on it would guard an inode nobody reads any
more. A symlinked config is followed, so edits replace its target and the link stays.

This module knows files, not TOML: `dihya.config.edit` builds the edits on it, and
`plugins verify` asks `exposure` who else may read or write the config and the store.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from dihya.reasons import FixedReasonError

LOCK_TIMEOUT_S: Final = 30.0
_LOCK_POLL_S: Final = 0.01


class ConfigFileError(FixedReasonError):
    """The config file cannot be resolved, locked or replaced; the message says why."""

    REASON = "config-file-unusable"


class ConfigLockTimeout(ConfigFileError):
    """Another edit held the lock for longer than the timeout."""

    REASON = "config-locked"


def real_path(path: Path) -> Path:
    """The file an edit must replace: `path` with every symlink followed (the target may not
    exist yet). A symlink loop is left for `edit_lock` to refuse."""
    try:
        return Path(os.path.realpath(path, strict=False))
    except (OSError, RuntimeError) as exc:  # pragma: no cover - realpath is lenient
        raise ConfigFileError(f"{path}: cannot resolve the config path: {exc}") from exc


def lock_path(path: Path) -> Path:
    """The lock file of the config at `path`: `.NAME.lock` beside its real file."""
    real = real_path(path)
    return real.with_name(f".{real.name}.lock")


@contextlib.contextmanager
def edit_lock(path: Path, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[Path]:
    """Hold the exclusive edit lock of the config at `path`; yields its real path.

    Every process editing the same real file (whatever symlink it went through) waits for
    the others; readers do not lock (they always see a whole file, old or new).
    """
    _check_no_loop(path)
    real = real_path(path)
    lock = lock_path(real)
    fd = _open_lock(lock)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise ConfigLockTimeout(
                        f"{path}: another edit of this config has held its lock ({lock}) for "
                        f"{timeout_s:.0f} s; nothing was changed. Try again once it is done "
                        "(`fuser` on the lock file shows who holds it)") from None
                time.sleep(_LOCK_POLL_S)
        yield real
    finally:
        os.close(fd)  # closing the last descriptor releases the flock


def _check_no_loop(path: Path) -> None:
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigFileError(f"{path}: the config path is a symlink loop") from exc


def _open_lock(lock: Path) -> int:
    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        return os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except PermissionError:
        try:  # someone else created it: a read-only descriptor can take the lock too
            return os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise ConfigFileError(f"cannot open the config's lock file {lock}: {exc}") from exc
    except OSError as exc:
        raise ConfigFileError(f"cannot create the config's lock file {lock}: {exc}") from exc


def replace_atomically(path: Path, text: str) -> None:
    """Replace the real file behind `path` by `text` in one rename: readers see the old
    file or the new one, never a part. Keeps the file's permissions and, where allowed,
    its owner; a new file gets mode 0600."""
    real = real_path(path)
    real.parent.mkdir(parents=True, exist_ok=True)
    try:
        old: os.stat_result | None = os.stat(real)
    except FileNotFoundError:
        old = None
    import tempfile  # only a write needs it, not a listing's read

    fd, tmp = tempfile.mkstemp(prefix=f".{real.name}.", suffix=".tmp", dir=real.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, stat.S_IMODE(old.st_mode) if old else 0o600)
        if old is not None and (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
            # root editing a config owned by the service user must not take it away
            with contextlib.suppress(PermissionError):
                os.chown(tmp, old.st_uid, old.st_gid)
        os.replace(tmp, real)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_directory(real.parent)


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (the new directory entry)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:  # pragma: no cover - a directory we just wrote into
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on a directory
        pass
    finally:
        os.close(fd)


def exposure(path: Path, what: str) -> list[str]:
    """Why the file at `path` (the `what`: "config", "store") is open to other users: one
    sentence per problem, each with the fix; empty when it is not. Read or write access
    for every user counts, and write access for the group; read access for the group does
    not (mode 0640 with a group holding only the backend's user is how a config owned by
    the operator is shown to the server). A file that does not exist has no exposure."""
    try:
        st = os.stat(path)
    except OSError:
        return []
    problems = []
    mode = stat.S_IMODE(st.st_mode)
    who = _who(mode)
    if who:
        problems.append(f"the {what} file {path} (mode {mode:04o}) is {who}: run "
                        f"`chmod o-rwx,g-w {path}` (the server's user should own it, or "
                        "read it through a group of its own)")
    parent = Path(os.path.realpath(path)).parent
    try:
        dmode = stat.S_IMODE(os.stat(parent).st_mode)
    except OSError:  # pragma: no cover - the file exists, so its directory does
        return problems
    if dmode & 0o022 and not dmode & stat.S_ISVTX:
        problems.append(f"the directory {parent} (mode {dmode:04o}) of the {what} file is "
                        f"writable by {'every user' if dmode & 0o002 else 'its group'}, who "
                        f"can replace the file: run `chmod go-w {parent}`")
    return problems


def _who(mode: int) -> str:
    """Who besides the owner (and a reading group) may read or write, e.g. "readable by
    every user"; "" if nobody."""
    parts = ["writable by its group"] if mode & 0o020 else []
    others = {0o4: "readable", 0o2: "writable", 0o6: "readable and writable"}.get(mode & 0o6)
    if others:
        parts.append(f"{others} by every user")
    return ", ".join(parts)
