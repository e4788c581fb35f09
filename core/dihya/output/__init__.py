"""Write generated files as the new content of OUTDIR: all of them or none, never a user's.

The files and a manifest of them (`.dihya-manifest.json`, see `dihya.output.manifest`) are
written into a temporary sibling directory, flushed to disk and then swapped with OUTDIR
(`dihya.output.treeswap`): a crash or an error never leaves a half-written or a missing OUTDIR.

What may be replaced:

- nothing (the default): OUTDIR must be absent or empty;
- `force`: a directory this tool generated, exactly as it wrote it; any other file,
  directory or link in it, or a generated file edited since, is refused by name;
- `keep_added`: the same, but entries the user added (a `.venv/`, a `notes.txt`) are moved
  into the new tree unchanged; an edited generated file is still refused.

Never the filesystem root, the user's home or the current directory (or what contains
them), a symbolic link or a mount point: those are refused whatever the flags.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Collection, Iterator, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Final

import attrs

from dihya.escaping import escape_text
from dihya.needs import unsafe_path_reason
from dihya.output.manifest import (
    MANIFEST_NAME,
    Manifest,
    ManifestError,
    dirs_of,
    read_manifest,
    survey,
)
from dihya.output.treeswap import (
    RecoveryError,
    discard,
    fsync_dir,
    fsync_tree,
    locked,
    new_tree_dir,
    recover,
    replace_dir,
)
from dihya.reasons import DihyaError

_SHOWN: Final = 10  # names listed in a refusal; the rest are counted
_DISK_FULL: Final = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class Replace(StrEnum):
    """What an existing, non-empty OUTDIR may be replaced with."""

    NEVER = "never"
    GENERATED = "generated"  # --force
    KEEP_ADDED = "keep-added"  # --update


#: The reason of an `OutputError`: refused as asked (exit 2), or writing failed (exit 1).
OUTPUT_REFUSED: Final = "output-refused"
OUTPUT_FAILED: Final = "output-failed"


class OutputError(DihyaError):
    """OUTDIR cannot be written as asked. `usage`: refused because of what was asked
    (exit 2); otherwise writing failed (exit 1). OUTDIR is as it was in both cases."""

    def __init__(self, message: str, *, usage: bool = True) -> None:
        super().__init__(OUTPUT_REFUSED if usage else OUTPUT_FAILED, message)
        self.usage = usage
        self.recovered: list[str] = []  # what was put back from an interrupted run first


@attrs.frozen
class Written:
    """What `write_tree` did: the generated files, the user's entries it kept, and what
    it recovered from an interrupted earlier run."""

    files: list[str]
    kept: list[str]
    recovered: list[str]


def replace_mode(force: bool, keep_added: bool) -> Replace:
    if keep_added:
        return Replace.KEEP_ADDED
    return Replace.GENERATED if force else Replace.NEVER


def prepare_outdir(outdir: Path, replace: Replace) -> list[str]:
    """Recover leftovers and refuse an OUTDIR that cannot be written, before generating
    (so a refusal costs no plugin run). `write_tree` checks again, with the new paths."""
    target = _target(outdir)
    if not target.parent.is_dir():
        return []
    with locked(target.parent):
        recovered = _recover(target)
        with _reporting(recovered):
            _plan(target, replace, planned=None)
    return recovered


def write_tree(files: Mapping[str, str], outdir: Path, force: bool = False,
               keep_added: bool = False) -> Written:
    """Write `files` (relative POSIX path -> text) as the new content of `outdir`."""
    contents = _encoded(files)
    target = _target(outdir)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        error = _failure(exc, target, "cannot create the directory of")
        if exc.errno in (errno.EEXIST, errno.ENOTDIR):  # `-o notes.txt/out`
            error = OutputError(f"{error}; a file stands where a directory is needed: move "
                                "it away, or choose another -o", usage=False)
        raise error from None
    with locked(target.parent):
        recovered = _recover(target)
        with _reporting(recovered):
            kept = _plan(target, replace_mode(force, keep_added), planned=contents)
            _write_and_swap(contents, target, kept)
    return Written(sorted(files), list(kept), recovered)


@contextlib.contextmanager
def _reporting(recovered: list[str]) -> Iterator[None]:
    """A refusal after a recovery still tells what the recovery put back."""
    try:
        yield
    except OutputError as exc:
        exc.recovered = recovered
        raise


def _encoded(files: Mapping[str, str]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for path, text in files.items():
        reason = unsafe_path_reason(path)
        if reason:
            raise OutputError(f"refusing to write {path!r}: {reason}", usage=False)
        if path == MANIFEST_NAME:
            raise OutputError(f"refusing to write {path!r}: the name is reserved for dihya's "
                              "record of the files it wrote", usage=False)
        try:
            out[path] = text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise OutputError(f"refusing to write {path!r}: not encodable as UTF-8 ({exc.reason})",
                              usage=False) from None
    return out


def _target(outdir: Path) -> Path:
    """OUTDIR as an absolute path, or OutputError if it must never be replaced."""
    target = Path(os.path.abspath(outdir))
    real = os.path.realpath(target)
    if target.is_symlink():
        raise OutputError(f"refusing to write {outdir}: it is a symbolic link to {real}; "
                          "pass the directory itself")
    for protected, what in _protected():
        if real == protected or protected.startswith(real.rstrip("/") + "/"):
            relation = f"is {what}" if real == protected else f"contains {what} ({protected})"
            raise OutputError(f"refusing to write {outdir}: it {relation}; dihya replaces OUTDIR "
                              "as a whole: give a new directory, e.g. "
                              f"-o {os.path.join(str(outdir), 'NAME')}")
    if target.exists() and not target.is_dir():
        raise OutputError(f"{outdir} exists and is not a directory")
    if target.is_dir() and os.path.ismount(target):
        raise OutputError(f"refusing to write {outdir}: it is a mount point, which cannot be "
                          "swapped; give a directory inside it")
    return target


def _protected() -> list[tuple[str, str]]:
    out = [("/", "the root directory")]
    with contextlib.suppress(KeyError, RuntimeError):  # no home known: nothing to protect
        out.append((os.path.realpath(Path.home()), "your home directory"))
    with contextlib.suppress(OSError):  # the current directory was deleted: nothing under it
        out.append((os.path.realpath(os.getcwd()), "the current directory"))
    return out


def _recover(target: Path) -> list[str]:
    try:
        return recover(target)
    except RecoveryError as exc:
        raise OutputError(str(exc), usage=False) from None
    except OSError as exc:
        raise _failure(exc, target, "cannot clean up after an interrupted run") from None


def _plan(target: Path, replace: Replace, planned: Collection[str] | None) -> tuple[str, ...]:
    try:
        return _plan_unchecked(target, replace, planned)
    except OSError as exc:
        raise _failure(exc, target, "cannot read") from None


def _plan_unchecked(target: Path, replace: Replace,
                    planned: Collection[str] | None) -> tuple[str, ...]:
    """Refuse unless `target` may be replaced as asked; return the user's entries to keep.
    `planned` (the new paths) is None before generating: collisions are checked later."""
    try:
        names = sorted(os.listdir(target))
    except FileNotFoundError:
        return ()
    if not names:
        return ()
    if replace is Replace.NEVER:
        raise OutputError(f"{target} is not empty; choose an empty or new directory, or pass "
                          "--force to replace a directory dihya generated (--update to also "
                          "keep files you added to it)")
    manifest = _manifest(target, names)
    found = survey(target, manifest, planned or ())
    labels = [f"{p} (changed since dihya wrote it)" for p in found.changed]
    if replace is Replace.GENERATED:
        labels += [f"{p} (not written by dihya)" for p in found.added]
    if labels:
        verb = "update" if replace is Replace.KEEP_ADDED else "replace"
        raise OutputError(f"refusing to {verb} {target}: {_listed(labels)}; "
                          + _advice(bool(found.changed)))
    if planned is not None:
        _check_collisions(target, found.added, planned)
    return found.added


def _manifest(target: Path, names: list[str]) -> Manifest:
    try:
        manifest = read_manifest(target)
    except ManifestError as exc:
        raise OutputError(f"refusing to replace {target}: {exc}; dihya cannot tell its files "
                          "from yours. Choose a new directory, or move this one away") from None
    if manifest is None:
        raise OutputError(f"refusing to replace {target}: dihya did not generate it (there is no "
                          f"{MANIFEST_NAME}); it holds {_listed(names)}. Choose a new or empty "
                          "directory, or move this one away yourself")
    return manifest


def _advice(changed: bool) -> str:
    if changed:
        return ("dihya never overwrites an edit: move your edited files out of it (or undo the "
                "edits), or generate into a new directory")
    return "move them out of it, or pass --update instead of --force to keep them"


def _check_collisions(target: Path, added: tuple[str, ...], planned: Collection[str]) -> None:
    planned_dirs = dirs_of(planned)
    clashes = []
    for entry in added:
        path = entry.rstrip("/")
        parts = path.split("/")
        ancestors = ("/".join(parts[:i]) for i in range(1, len(parts)))
        if path in planned or path in planned_dirs or any(a in planned for a in ancestors):
            clashes.append(entry)
    if clashes:
        raise OutputError(f"refusing to update {target}: the new generation writes where you "
                          f"added {_listed(clashes)}; move them out of it, then run again")


def _listed(names: list[str] | tuple[str, ...]) -> str:
    """The first names (escaped: a file name may hold a line break), then a count."""
    shown = ", ".join(escape_text(name, backslash=False) for name in names[:_SHOWN])
    more = len(names) - _SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def _write_and_swap(contents: Mapping[str, bytes], target: Path, kept: tuple[str, ...]) -> None:
    mode = _mode_of(target)
    try:
        tmp = new_tree_dir(target)
        _write_files(tmp, contents, mode)
        _carry_over(kept, target, tmp)
        previous = replace_dir(tmp, target)
    except BaseException as exc:
        undone = _undo(target)
        if isinstance(exc, OSError):
            raise _failure(exc, target, "cannot write", undone) from None
        raise
    discard(previous)
    with contextlib.suppress(OSError):  # the swap is done; a power cut is all this guards
        fsync_dir(target.parent)


def _write_files(tmp: Path, contents: Mapping[str, bytes], mode: int) -> None:
    """Every file, then the manifest, each flushed: a tree with a manifest is complete."""
    for rel, data in sorted(contents.items()):
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_file(path, data)
    part = tmp / (MANIFEST_NAME + ".part")
    _write_file(part, Manifest.of(contents).to_bytes())
    part.rename(tmp / MANIFEST_NAME)
    os.chmod(tmp, mode)
    fsync_tree(tmp)


def _write_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _mode_of(outdir: Path) -> int:
    """OUTDIR's permissions if it exists (a private directory stays private), else 0o755."""
    try:
        return outdir.stat().st_mode & 0o7777
    except OSError:
        return 0o755


def _carry_over(kept: tuple[str, ...], target: Path, tmp: Path) -> None:
    """Move the user's entries into the new tree, each to the same relative place."""
    for entry in kept:
        rel = entry.rstrip("/")
        destination = tmp / rel
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.rename(target / rel, destination)


def _undo(target: Path) -> bool:
    """Put OUTDIR back as it was after a failed write; False if that failed too (the next
    run will finish it)."""
    try:
        recover(target)
    except (OSError, RecoveryError):
        return False
    return True


def _failure(exc: OSError, target: Path, doing: str, undone: bool = True) -> OutputError:
    """One line: what failed, that OUTDIR is intact (or how it will be), what to do."""
    state = (f"{target} is as it was" if undone else
             f"the next `dihya generate -o {target}` puts back what this run left beside it")
    where = f" ({exc.filename})" if exc.filename and exc.errno not in _DISK_FULL else ""
    advice = ("; free some space (or raise the quota or file-size limit), or write to "
              "another disk with -o" if exc.errno in _DISK_FULL else "")
    return OutputError(f"{doing} {target}: {exc.strerror}{where}; {state}{advice}", usage=False)
