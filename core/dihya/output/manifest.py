"""The record of what `dihya generate` wrote: `.dihya-manifest.json` at the top of OUTDIR.

It maps every generated file (relative POSIX path) to the SHA-256 of its bytes. It is how
a later `--force` or `--update` tells the tool's own files from the user's: a file listed
with the same hash is the tool's; a listed file whose bytes differ was edited; anything
else (a file, a directory, a symbolic link) was added by someone else.

The survey walks a tree without following symbolic links, so a link inside OUTDIR is
always someone else's entry and never leads the tool outside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final

import attrs

from dihya import __version__
from dihya.needs import unsafe_path_reason
from dihya.reasons import FixedReasonError

MANIFEST_NAME: Final = ".dihya-manifest.json"
FORMAT: Final = "dihya-manifest/1"
_NOTE: Final = ("Written by `dihya generate`: each file it wrote and the SHA-256 of its bytes. "
                "`dihya generate --force` or `--update` read it to tell the tool's files from "
                "yours; keep it with the project.")


class ManifestError(FixedReasonError):
    """A manifest file exists but cannot be trusted (unreadable, malformed, unsafe paths)."""

    REASON = "invalid-manifest"


@attrs.frozen
class Manifest:
    """Relative POSIX path -> sha256 hex of the bytes the tool wrote there."""

    files: Mapping[str, str]

    @classmethod
    def of(cls, contents: Mapping[str, bytes]) -> Manifest:
        return cls({path: sha256_hex(data) for path, data in contents.items()})

    def to_bytes(self) -> bytes:
        body = {"format": FORMAT, "generator": f"dihya-core {__version__}", "note": _NOTE,
                "files": dict(sorted(self.files.items()))}
        return (json.dumps(body, indent=2, ensure_ascii=False) + "\n").encode("utf-8")

    def owns(self, rel: str, path: Path) -> bool:
        """Whether `path` (at `rel`) is a regular file holding exactly what the tool wrote."""
        expected = self.files.get(rel)
        return expected is not None and _file_sha256(path) == expected


def dirs_of(paths: Iterable[str]) -> set[str]:
    """Every directory that holds one of `paths`, at any depth (`a`, `a/b` for `a/b/c`)."""
    out: set[str] = set()
    for path in paths:
        parts = path.split("/")[:-1]
        out.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    return out


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_manifest(root: Path) -> Manifest | None:
    """The manifest at the top of `root`; None if there is none (no such file)."""
    path = root / MANIFEST_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:  # a symbolic link (ELOOP), no permission
        raise ManifestError(f"{MANIFEST_NAME} cannot be read: {exc.strerror}") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ManifestError(f"{MANIFEST_NAME} is not a regular file")
    with os.fdopen(fd, "rb") as fh:
        raw = fh.read(64 * 1024 * 1024)
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ManifestError(f"{MANIFEST_NAME} is not valid JSON") from exc
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise ManifestError(f"{MANIFEST_NAME} is not a {FORMAT} manifest")
    files = body.get("files")
    if not isinstance(files, dict):
        raise ManifestError(f"{MANIFEST_NAME} has no `files` object")
    for rel, digest in files.items():
        if unsafe_path_reason(rel) or rel == MANIFEST_NAME:
            raise ManifestError(f"{MANIFEST_NAME} lists an unsafe path {rel!r}")
        if not isinstance(digest, str) or len(digest) != 64:
            raise ManifestError(f"{MANIFEST_NAME} has a malformed hash for {rel!r}")
    return Manifest(dict(files))


def _file_sha256(path: Path) -> str | None:
    """The hash of a regular file's bytes; None for anything else (a link, a directory)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None  # a directory, a FIFO or a device under a generated file's name
    with os.fdopen(fd, "rb") as fh:
        digest = hashlib.sha256()
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@attrs.frozen
class Survey:
    """What an existing tree holds besides the tool's own unchanged files.

    `changed`: listed files whose bytes differ (or that are no longer regular files).
    `added`: entries the tool did not write, each the largest one that holds no listed or
    planned file (a whole `.venv/`, one `notes.txt`); directories end with `/`.
    """

    changed: tuple[str, ...]
    added: tuple[str, ...]


def survey(root: Path, manifest: Manifest, planned: Iterable[str] = ()) -> Survey:
    """Walk `root` and sort what is not the tool's own unchanged output.

    A directory is walked into when a listed file or a `planned` one (the next
    generation's paths) lies inside it, so a user's file beside generated ones is named
    alone; any other directory is one added entry.
    """
    inner = dirs_of([*manifest.files, *planned])
    changed: list[str] = []
    added: list[str] = []
    _walk(root, "", manifest, inner, changed, added)
    return Survey(tuple(changed), tuple(added))


def _walk(directory: Path, rel: str, manifest: Manifest, inner: set[str],
          changed: list[str], added: list[str]) -> None:
    with os.scandir(directory) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        path = rel + entry.name
        if path == MANIFEST_NAME:
            continue
        is_dir = entry.is_dir(follow_symlinks=False)
        if is_dir and path in inner:
            _walk(Path(entry.path), path + "/", manifest, inner, changed, added)
        elif path in manifest.files:
            if not manifest.owns(path, Path(entry.path)):
                changed.append(path + ("/" if is_dir else ""))
        else:
            added.append(path + ("/" if is_dir else ""))
