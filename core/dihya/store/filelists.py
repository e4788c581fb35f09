"""The files behind a fingerprint, kept so that a new version can be compared with them.

A fingerprint is one hash over the lines `"<sha256> <size> <path>"` of a distribution's
files (`dihya.gate.fingerprint`); an operator about to approve a new version wants to see which
files were added, removed or changed since the approved one. pip keeps nothing of a
replaced version, so the list of an approved version's files is recorded in the store
(`dihya_file_lists`) when the console approves it and whenever the server sees an
approved plugin whose files verify. A recorded list is used only if it hashes to the
fingerprint it is recorded under: a list altered in the store is ignored, never shown as
what was approved.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import PurePosixPath
from typing import Final

import attrs
import sqlalchemy as sa

from dihya.gate.decide import inspect_files
from dihya.gate.discovery import DiscoveredPlugin
from dihya.gate.fingerprint import FINGERPRINT_HEADER, InstalledFiles
from dihya.store import Store, file_lists_table

#: How a dist-info directory is named in a diff: its version is in its name, so without
#: this every metadata file of an upgrade would show as one removed and one added.
DIST_INFO: Final = "<dist-info>"


@attrs.frozen
class FileEntry:
    """One file of a distribution, as the fingerprint covers it."""

    path: str  # relative to site-packages, POSIX
    sha256: str
    size: int


@attrs.frozen
class FileList:
    """Every file a fingerprint covers."""

    fingerprint: str
    distribution: str
    version: str
    files: tuple[FileEntry, ...]


@attrs.frozen
class FileDiff:
    """What changed between two file lists (paths with the dist-info directory named
    `<dist-info>`)."""

    added: tuple[FileEntry, ...]
    removed: tuple[FileEntry, ...]
    changed: tuple[tuple[FileEntry, FileEntry], ...]  # (old, new)
    unchanged: int

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


def fingerprint_of(entries: Iterable[FileEntry]) -> str:
    """The fingerprint of files given by their hashes and sizes (`dihya.gate.fingerprint.digest`
    computes the same value from their bytes)."""
    h = hashlib.sha256(FINGERPRINT_HEADER)
    for line in sorted(f"{e.sha256} {e.size} {e.path}\n" for e in entries):
        h.update(line.encode("utf-8"))
    return f"sha256:{h.hexdigest()}"


def list_files(plugin: DiscoveredPlugin, files: InstalledFiles | None = None
               ) -> FileList | None:
    """The installed plugin's files with their hashes (`files`: what `inspect_files` found,
    if already known); None when they cannot be read or changed while being read (their
    fingerprint no longer matches)."""
    if files is None:
        files, _problem = inspect_files(plugin)
    site = plugin.site_packages
    if files is None or site is None:
        return None
    entries = []
    for rel in files.files:
        try:
            with open(os.path.join(site, rel), "rb") as fh:
                data = fh.read()
        except OSError:
            return None
        entries.append(FileEntry(rel, hashlib.sha256(data).hexdigest(), len(data)))
    found = FileList(files.fingerprint, plugin.distribution, plugin.version, tuple(entries))
    return found if fingerprint_of(found.files) == files.fingerprint else None


def remember(store: Store, files: FileList) -> bool:
    """Record `files` under its fingerprint unless already recorded; False if the list
    does not hash to its fingerprint (nothing is recorded then)."""
    if fingerprint_of(files.files) != files.fingerprint:
        return False
    text = json.dumps([[e.path, e.sha256, e.size] for e in files.files], separators=(",", ":"))
    with store.locked("file-lists") as conn:
        exists = conn.execute(sa.select(file_lists_table.c.fingerprint).where(
            file_lists_table.c.fingerprint == files.fingerprint)).first()
        if exists is None:
            conn.execute(file_lists_table.insert().values(
                fingerprint=files.fingerprint, distribution=files.distribution,
                version=files.version, files=text, recorded_at=time.time()))
    return True


def recorded(store: Store, fingerprints: Sequence[str]) -> set[str]:
    """Which of `fingerprints` have a file list in the store."""
    if not fingerprints:
        return set()
    with store.begin() as conn:
        rows = conn.execute(sa.select(file_lists_table.c.fingerprint).where(
            file_lists_table.c.fingerprint.in_(list(fingerprints)))).all()
    return {r.fingerprint for r in rows}


def recall(store: Store, fingerprint: str) -> FileList | None:
    """The file list recorded for `fingerprint`, if any and if it still hashes to it."""
    with store.begin() as conn:
        row = conn.execute(sa.select(file_lists_table).where(
            file_lists_table.c.fingerprint == fingerprint)).first()
    if row is None:
        return None
    try:
        entries = tuple(FileEntry(str(p), str(h), int(s)) for p, h, s in json.loads(row.files))
    except (ValueError, TypeError):
        return None
    found = FileList(fingerprint, row.distribution, row.version, entries)
    return found if fingerprint_of(entries) == fingerprint else None


def diff_key(path: str) -> str:
    """`pkg-1.0.dist-info/METADATA` -> `<dist-info>/METADATA`; other paths as they are."""
    parts = PurePosixPath(path).parts
    if len(parts) > 1 and parts[0].endswith(".dist-info"):
        return "/".join((DIST_INFO, *parts[1:]))
    return path


def diff(old: FileList, new: FileList) -> FileDiff:
    """Files added, removed and changed (content or size) from `old` to `new`."""
    before = {diff_key(e.path): e for e in old.files}
    after = {diff_key(e.path): e for e in new.files}
    added = tuple(after[k] for k in sorted(after.keys() - before.keys()))
    removed = tuple(before[k] for k in sorted(before.keys() - after.keys()))
    changed = tuple((before[k], after[k]) for k in sorted(before.keys() & after.keys())
                    if (before[k].sha256, before[k].size) != (after[k].sha256, after[k].size))
    unchanged = len(before.keys() & after.keys()) - len(changed)
    return FileDiff(added, removed, changed, unchanged)
