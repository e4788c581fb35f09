"""Content fingerprints of a distribution: from its installed files or from its wheel.

`sha256:<hex>` of `"dihya-fp-v1\\n"` followed by the sorted lines `"<sha256> <size> <path>\\n"`
of every file that lands in site-packages, hashed from the bytes (RECORD is only the list of
files, never the source of hashes). Both sides give the same value, so a publisher prints
it from the wheel and an operator approves it before installing.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.machinery
import io
import os
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path, PurePosixPath
from typing import Final

import attrs

from dihya.reasons import FixedReasonError, Reason

FINGERPRINT_HEADER: Final = b"dihya-fp-v1\n"
#: dist-info files that installers write or rewrite, hence not part of what was approved.
INSTALLER_FILES: Final = frozenset(
    {"RECORD", "RECORD.jws", "RECORD.p7s", "INSTALLER", "REQUESTED", "direct_url.json"}
)
#: Suffixes the import system loads code from (.py, .pyc, extension modules).
IMPORTABLE_SUFFIXES: Final = tuple(sorted(set(importlib.machinery.all_suffixes())))


class FingerprintError(FixedReasonError):
    """The files of a distribution cannot be fingerprinted (not a wheel, no RECORD...)."""

    REASON = Reason.MISSING_FILE


@attrs.frozen
class InstalledFiles:
    """What verification learns from an installed distribution's files."""

    fingerprint: str
    files: tuple[str, ...]
    missing: tuple[str, ...]
    unlisted: tuple[str, ...]


def is_excluded(path: str) -> bool:
    """True for paths left out of the fingerprint (installer-written files, caches)."""
    parts = PurePosixPath(path).parts
    if "__pycache__" in parts:
        return True
    return len(parts) == 2 and parts[0].endswith(".dist-info") and parts[1] in INSTALLER_FILES


def digest(entries: Iterable[tuple[str, bytes]]) -> str:
    """The fingerprint of (path, content) pairs, paths relative to site-packages.

    FingerprintError for a path holding a line break: its line could carry the next file's
    whole line (`"<sha> <size> a\\n<sha> <size> b"`), so a file could be deleted, its line
    folded into the name of the file sorted before it, with the fingerprint unchanged."""
    lines = sorted(
        f"{hashlib.sha256(data).hexdigest()} {len(data)} {_one_line(path)}\n"
        for path, data in entries
    )
    h = hashlib.sha256(FINGERPRINT_HEADER)
    for line in lines:
        h.update(line.encode("utf-8"))
    return f"sha256:{h.hexdigest()}"


def _one_line(path: str) -> str:
    if "\n" in path or "\r" in path:
        raise FingerprintError(f"a file name holds a line break ({path!r}): it cannot be "
                               "fingerprinted unambiguously; no wheel should ship one")
    return path


def record_paths(record_text: str) -> list[str]:
    """The file paths listed by a RECORD file (its hashes are deliberately ignored)."""
    return [row[0] for row in csv.reader(io.StringIO(record_text)) if row and row[0]]


def fingerprint_wheel(wheel: Path) -> str:
    """Fingerprint of the files a wheel installs into site-packages."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            entries = []
            for info in zf.infolist():
                if info.is_dir():
                    continue
                path = _wheel_target(info.filename)
                if path is not None and not is_excluded(path):
                    entries.append((path, zf.read(info)))
    except (zipfile.BadZipFile, OSError) as exc:
        raise FingerprintError(f"{wheel}: not a readable wheel: {exc}") from exc
    if not any(p.endswith(".dist-info/METADATA") for p, _ in entries):
        raise FingerprintError(f"{wheel}: not a wheel (no *.dist-info/METADATA inside)")
    return digest(entries)


def uncovered_members(wheel: Path) -> list[str]:
    """The members of `wheel` that its fingerprint does not cover, its dist-info RECORD
    aside (pip writes its own): `.data/` scripts, headers and data, `__pycache__` files
    and installer files. A wheel that `dihya.authoring.wheelcache` repacks has none."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = [i.filename for i in zf.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError) as exc:
        raise FingerprintError(f"{wheel}: not a readable wheel: {exc}") from exc
    out = []
    for name in names:
        parts = PurePosixPath(name).parts
        if len(parts) == 2 and parts[0].endswith(".dist-info") and parts[1] == "RECORD":
            continue
        path = _wheel_target(name)
        if path is None or is_excluded(path):
            out.append(name)
    return out


def _wheel_target(name: str) -> str | None:
    parts = PurePosixPath(name).parts
    if parts and parts[0].endswith(".data"):
        if len(parts) > 2 and parts[1] in ("purelib", "platlib"):
            return "/".join(parts[2:])
        return None  # scripts, headers, data: installed outside site-packages
    return name


# Real paths of site-packages directories, shared while one gate pass runs (see
# `shared_realpaths`); None outside such a pass, where every call resolves afresh.
_REALPATHS: ContextVar[dict[str, str] | None] = ContextVar("dihya_realpaths", default=None)


@contextmanager
def shared_realpaths() -> Iterator[None]:
    """Resolve each directory's real path once while the block runs (one gate pass).

    Only directory resolution is shared: every file is still opened and hashed each time.
    Inside another such block, the outer one's resolutions are shared.
    """
    if _REALPATHS.get() is not None:
        yield
        return
    token = _REALPATHS.set({})
    try:
        yield
    finally:
        _REALPATHS.reset(token)


def resolved_realpaths() -> dict[str, str]:
    """{path: real path} of the directories resolved so far in this `shared_realpaths`
    block (empty outside one)."""
    return dict(_REALPATHS.get() or {})


def realpath(path: str) -> str:
    """`os.path.realpath`, resolved once per directory inside `shared_realpaths`."""
    cache = _REALPATHS.get()
    if cache is None:
        return os.path.realpath(path)
    hit = cache.get(path)
    if hit is None:
        hit = cache[path] = os.path.realpath(path)
    return hit


def realpath_of_file(path: str) -> str:
    """`os.path.realpath(path)` for an absolute path; inside `shared_realpaths`, each parent
    directory is resolved once per pass (one `lstat` per new directory, none for a known
    one) and only the file itself is looked at afresh."""
    cache = _REALPATHS.get()
    parent, name = os.path.split(path)
    if cache is None or not os.path.isabs(path) or name in ("", ".", ".."):
        return os.path.realpath(path)
    full = os.path.join(_real_dir(parent, cache), name)
    return os.path.realpath(full) if os.path.islink(full) else full


def _real_dir(path: str, cache: dict[str, str]) -> str:
    hit = cache.get(path)
    if hit is not None:
        return hit
    parent, name = os.path.split(path)
    if name in ("", ".", "..") or parent == path:
        hit = os.path.realpath(path)  # the root, or a path that is not normalized
    else:
        # a plain entry of a real directory is that directory's real path + its name,
        # unless the entry itself is a link
        full = os.path.join(_real_dir(parent, cache), name)
        hit = os.path.realpath(full) if os.path.islink(full) else full
    cache[path] = hit
    return hit


def _read_bytes(path: str) -> bytes:
    # os.open/os.read: no buffered file object, about half the cost of Path.read_bytes.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def inspect_installed(dist_info: Path, record_text: str | None = None) -> InstalledFiles:
    """Fingerprint an installed distribution and list its missing and unlisted files.

    `dist_info` is the distribution's `*.dist-info` directory; its parent is the
    site-packages directory that paths are relative to. `record_text` is RECORD's content
    when the caller already read it (read from disk otherwise).
    """
    return inspect_installed_detail(dist_info, record_text).installed


@attrs.frozen
class Inspection:
    """`inspect_installed`'s result and what it looked at: for `dihya.gate.verifycache`."""

    installed: InstalledFiles
    hashed: tuple[str, ...]  # the files read and hashed, relative to site-packages
    package_dirs: tuple[str, ...]  # the directories listed for unlisted code files
    absent: tuple[str, ...]  # paths beside top-level modules that must not exist


def inspect_installed_detail(dist_info: Path, record_text: str | None = None) -> Inspection:
    """`inspect_installed`, with the files and directories it looked at."""
    site = dist_info.parent
    site_str = os.fspath(site)
    if record_text is None:
        try:
            with open(os.path.join(dist_info, "RECORD"), encoding="utf-8") as fh:
                record_text = fh.read()
        except OSError as exc:
            raise FingerprintError(f"{dist_info}: cannot read RECORD: {exc}") from exc
    listed = record_paths(record_text)
    root = realpath(site_str)
    entries: list[tuple[str, bytes]] = []
    missing: list[str] = []
    inside: set[str] = set()
    for raw in listed:
        rel = _inside(root, raw)
        if rel is None:
            continue  # console-script wrappers and other files outside site-packages
        inside.add(rel)
        if _excluded_normalized(rel):
            continue
        try:
            data = _read_bytes(os.path.join(site_str, rel))
        except FileNotFoundError:
            missing.append(rel)
            continue
        except OSError:
            try:  # again the plain way, for the usual error message (or a raced success)
                data = (site / rel).read_bytes()
            except FileNotFoundError:
                missing.append(rel)
                continue
            except OSError as exc:
                raise FingerprintError(f"{site / rel}: cannot read: {exc}") from exc
        entries.append((rel, data))
    walked: list[str] = []
    absent: list[str] = []
    unlisted = unlisted_code_files(site, inside, walked, absent)
    installed = InstalledFiles(
        fingerprint=digest(entries),
        files=tuple(sorted(p for p, _ in entries)),
        missing=tuple(sorted(missing)),
        unlisted=tuple(unlisted),
    )
    return Inspection(installed, tuple(p for p, _ in entries), tuple(walked), tuple(absent))


def _excluded_normalized(rel: str) -> bool:
    """`is_excluded` for a normalized relative POSIX path (no empty or `.` segments)."""
    if "__pycache__" in rel:
        return is_excluded(rel)
    head, sep, tail = rel.partition("/")
    return bool(sep) and "/" not in tail and head.endswith(".dist-info") and (
        tail in INSTALLER_FILES)


def _inside(root: str, raw: str) -> str | None:
    full = os.path.normpath(os.path.join(root, raw))
    if full != root and full.startswith(root + os.sep):
        if os.sep == "/" and root != "/":
            # `full` is normalized and starts with `root/`: the rest is the relative path.
            return full[len(root) + 1:]
        return PurePosixPath(Path(os.path.relpath(full, root))).as_posix()
    return None


def unlisted_code_files(site: Path, listed: set[str], walked: list[str] | None = None,
                        absent: list[str] | None = None) -> list[str]:
    """Importable files inside the distribution's packages that RECORD does not list.

    Walks every package whose `__init__.py` the distribution lists (outermost ones),
    and checks the siblings of its top-level modules: an unlisted `.pyc` or extension
    module there would be imported instead of, or beside, the verified source. The
    directories listed are appended to `walked` and the sibling paths looked for to
    `absent` (relative to `site`), when given.
    """
    inits = {p for p in listed if p.endswith("/__init__.py")}
    roots = sorted(
        {
            p.rsplit("/", 1)[0]
            for p in inits
            if not any(p.startswith(q.rsplit("/", 1)[0] + "/") and p != q for q in inits)
        }
    )
    found: list[str] = []
    site_str = os.fspath(site)
    for pkg in roots:
        for dirpath, dirnames, filenames in os.walk(site / pkg):
            reldir = _relative_dir(dirpath, site_str, site)
            if walked is not None:
                walked.append(reldir)
            # a link (to a directory, or dangling: its target can appear later without this
            # directory changing) is never installed by a wheel, and os.walk does not
            # follow it: whatever it leads to could be imported as part of the package
            found += [f"{reldir}/{name}" for name in dirnames
                      if os.path.islink(os.path.join(dirpath, name))]
            found += [f"{reldir}/{name}" for name in filenames
                      if not name.endswith(IMPORTABLE_SUFFIXES)
                      and os.path.islink(os.path.join(dirpath, name))
                      and not os.path.exists(os.path.join(dirpath, name))]
            bytecode_dir = os.path.basename(dirpath) == "__pycache__"
            found += [
                f"{reldir}/{name}"
                for name in filenames
                if name.endswith(IMPORTABLE_SUFFIXES) and f"{reldir}/{name}" not in listed
                and not (bytecode_dir and _cached_bytecode(name))
            ]
    modules = {p[: -len(".py")] for p in listed if "/" not in p and p.endswith(".py")}
    for stem in sorted(modules):
        for suffix in IMPORTABLE_SUFFIXES:
            candidate = stem + suffix
            if candidate in listed:
                continue
            if absent is not None:
                absent.append(candidate)
            if os.path.exists(os.path.join(site_str, candidate)):
                found.append(candidate)
    return sorted(found)


def _cached_bytecode(name: str) -> bool:
    """A name the interpreter writes in `__pycache__/`: `MODULE.TAG[.opt-N].pyc`.

    Anything else there that the import system loads — `__init__.py`, a bare `x.pyc`, an
    extension module — makes `__pycache__` (a valid module name) an importable package or
    module of its own: that is unlisted code, though the fingerprint leaves `__pycache__/`
    out."""
    return name.endswith(".pyc") and "." in name[:-len(".pyc")].lstrip(".")


def _relative_dir(dirpath: str, site_str: str, site: Path) -> str:
    # os.walk(site / pkg) yields `str(site / pkg)` and its subdirectories joined with "/".
    if (os.sep == "/" and site_str and site_str != "/" and not site_str.endswith("/")
            and dirpath.startswith(site_str + "/") and "/../" not in dirpath
            and "/./" not in dirpath):
        return dirpath[len(site_str) + 1:]
    return PurePosixPath(Path(os.path.relpath(dirpath, site))).as_posix()
