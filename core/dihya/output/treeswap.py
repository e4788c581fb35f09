"""Put a new directory tree in place of OUTDIR so that one of the two is always there.

The new tree is built in a sibling `.NAME.tmp-XXXXXXXX` and then exchanged with OUTDIR in
one `renameat2(RENAME_EXCHANGE)` call: at every instant OUTDIR is either the old tree or
the new one. Where the filesystem or the platform cannot exchange, OUTDIR is renamed to
`.NAME.old-XXXXXXXX` and the new tree renamed into its place; a crash between those two
renames leaves OUTDIR absent for the next run to put back.

Every run into OUTDIR first recovers what an interrupted run left beside it (`recover`):
an `.old-` tree goes back into place when OUTDIR is missing, and every leftover tree gives
back the entries that are not the tool's own (a user's file carried over by `--update`)
before it is deleted. A leftover without a valid manifest was still being written: it
holds only the tool's partial files (the manifest is written last, and deleted last). An
`.old-` tree without a manifest that is not empty was left by an earlier version of the
tool, which did not write one: it is left alone, with a note. All of this runs under an
exclusive `flock` on the parent directory, so a concurrent run never takes another's tree
for a leftover.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from dihya.output.manifest import MANIFEST_NAME, Manifest, ManifestError, dirs_of, read_manifest
from dihya.reasons import FixedReasonError

_AT_FDCWD: Final = -100
_RENAME_EXCHANGE: Final = 2
# errors meaning "this filesystem or kernel cannot exchange", not "these paths are wrong"
_NO_EXCHANGE: Final = frozenset({errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP})


class RecoveryError(FixedReasonError):
    """A leftover of an interrupted run cannot be put back without overwriting something."""

    REASON = "recovery-failed"


@contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on `directory` (advisory: other `dihya generate` runs)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        yield  # an unreadable parent: the renames below will say what is wrong
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def new_tree_dir(outdir: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix=f".{outdir.name}.tmp-", dir=outdir.parent))


def leftovers(outdir: Path) -> tuple[list[Path], list[Path]]:
    """(`.old-` trees, `.tmp-` trees) that runs into `outdir` left in its parent."""
    pattern = re.compile(rf"\.{re.escape(outdir.name)}\.(tmp|old)-[a-z0-9_]{{8}}")
    olds: list[Path] = []
    tmps: list[Path] = []
    try:
        names = sorted(os.listdir(outdir.parent))
    except FileNotFoundError:
        return olds, tmps
    for name in names:
        match = pattern.fullmatch(name)
        path = outdir.parent / name
        if match and path.is_dir() and not path.is_symlink():
            (olds if match.group(1) == "old" else tmps).append(path)
    return olds, tmps


def exchange(a: Path, b: Path) -> bool:
    """Swap the directories `a` and `b` atomically; False if the filesystem cannot."""
    renameat2 = getattr(_libc(), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _NO_EXCHANGE:
        return False
    raise OSError(code, os.strerror(code), str(b))


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def replace_dir(new: Path, outdir: Path) -> Path | None:
    """Put the tree `new` at `outdir`; return where the previous tree now is (None if
    there was none). That previous tree is the caller's to delete."""
    if not os.path.lexists(outdir):
        os.rename(new, outdir)
        return None
    if exchange(new, outdir):
        return new  # the name `new` now holds the previous tree
    old = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.old-", dir=outdir.parent))
    old.rmdir()  # a unique name; we hold the parent's lock
    os.rename(outdir, old)
    rename_into_place(new, outdir)
    return old


def rename_into_place(new: Path, outdir: Path) -> None:
    """The second rename of the fallback: a separate step, so a test can stop before it."""
    os.rename(new, outdir)


def recover(outdir: Path) -> list[str]:
    """Undo or finish what interrupted runs into `outdir` left; return what was done."""
    olds, tmps = leftovers(outdir)
    done: list[str] = []
    if not os.path.lexists(outdir) and olds:
        if len(olds) > 1:
            raise RecoveryError(
                f"{outdir} is missing and several interrupted runs left trees beside it: "
                f"{', '.join(p.name for p in olds)}; rename the one to keep to {outdir.name}")
        os.rename(olds.pop(), outdir)
        done.append(f"put back {outdir}, which an interrupted run had left as a hidden sibling")
    for tree in olds + tmps:
        manifest = _manifest_of(tree)
        if manifest is None and tree in olds and any(tree.iterdir()):
            # Ours always have a manifest until their last file goes (see `discard`): this
            # is a previous OUTDIR that an earlier dihya version was about to delete.
            done.append(f"left {tree} as it is: a previous {outdir.name} without a manifest; "
                        "keep what you want from it, then delete it")
            continue
        moved = give_back(tree, outdir, manifest)
        if moved:
            done.append(f"put back {', '.join(moved)} into {outdir} from {tree.name}")
        discard(tree)
    return done


def _manifest_of(tree: Path) -> Manifest | None:
    try:
        return read_manifest(tree)
    except ManifestError:
        return None  # cut short while being written: not a finished tree


def give_back(tree: Path, outdir: Path, manifest: Manifest | None) -> list[str]:
    """Move every entry of `tree` that is not the tool's own back to the same place in
    `outdir`; RecoveryError (and nothing deleted) if one would overwrite something.

    A tree without a manifest was still being written (the manifest is its last file, and
    the user's entries are moved in only after it): it holds only the tool's files."""
    if manifest is None:
        return []
    moved: list[str] = []
    clashes: list[str] = []
    _give_back_dir(tree, outdir, "", manifest, dirs_of(manifest.files), moved, clashes)
    if clashes:
        raise RecoveryError(
            f"an interrupted run left {tree}; it holds {', '.join(clashes)}, which {outdir} "
            "also has now: compare the two, move what you want to keep, then delete "
            f"{tree.name} and run again")
    return moved


def _give_back_dir(src: Path, dst: Path, rel: str, manifest: Manifest, inner: set[str],
                   moved: list[str], clashes: list[str]) -> None:
    with os.scandir(src) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        path = rel + entry.name
        if path == MANIFEST_NAME:
            continue
        is_dir = entry.is_dir(follow_symlinks=False)
        if not is_dir and manifest.owns(path, Path(entry.path)):
            continue  # the tool's own file: deleted with the tree
        target = dst / entry.name
        if is_dir and (path in inner or _is_real_dir(target)):
            _give_back_dir(Path(entry.path), target, path + "/", manifest, inner, moved, clashes)
        elif os.path.lexists(target):
            clashes.append(path)
        else:
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.rename(entry.path, target)
            except (FileExistsError, NotADirectoryError):
                clashes.append(path)  # a file now where its directory was
                continue
            moved.append(path + ("/" if is_dir else ""))


def _is_real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def discard(tree: Path | None) -> None:
    """Delete a tree that holds only the tool's files, its manifest last: a deletion cut
    short leaves a tree that `recover` still recognises as the tool's, and finishes."""
    if tree is None:
        return
    with contextlib.suppress(OSError):
        for entry in os.scandir(tree):
            if entry.name == MANIFEST_NAME:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
    shutil.rmtree(tree, ignore_errors=True)


def fsync_tree(root: Path) -> None:
    """Flush the directory entries of `root` and below to disk (files are flushed as they
    are written), so a power cut after the swap cannot bring back an empty tree."""
    for directory, _dirs, _files in os.walk(root, topdown=False):
        fsync_dir(Path(directory))


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
