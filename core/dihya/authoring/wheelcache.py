"""The way back of an upgrade: installed plugin versions kept as wheels in the user's cache.

Before `dihya plugins install` replaces an installed plugin distribution, `keep_installed`
packs its installed files back into a wheel (the files RECORD lists inside site-packages,
with the dist-info's METADATA, WHEEL and entry_points.txt; installer files and bytecode
left out) under `$XDG_CACHE_HOME/dihya/wheels/<distribution>/` (`~/.cache/...` by
default). The content fingerprint of that wheel is the one the installed files had, so it
is kept only when the two match: what comes back is exactly what was approved. `previous`
finds the version to go back to: the highest kept version below the installed one, else
the most recently kept other version.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import importlib.metadata as md
import os
import tempfile
import zipfile
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from dihya.gate.signing import SigningError, read_wheel

# written by installers, not part of what was published (as the fingerprint leaves them out)
_INSTALLER_FILES = frozenset({"RECORD", "INSTALLER", "REQUESTED", "direct_url.json",
                              "RECORD.jws", "RECORD.p7s"})


def cache_root() -> Path:
    """`$XDG_CACHE_HOME/dihya/wheels`, else `~/.cache/dihya/wheels`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dihya" / "wheels"


def _folder(distribution: str) -> Path:
    return cache_root() / canonicalize_name(distribution)


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def keep_installed(distribution: str, fingerprint: str | None = None) -> Path | None:
    """Pack the installed `distribution` into a wheel in the cache and return its path;
    None when it is not installed, a file cannot be read, or the wheel would not have the
    installed files' `fingerprint` (when given)."""
    importlib.invalidate_caches()
    try:
        dist = md.distribution(distribution)
    except md.PackageNotFoundError:
        return None
    files = dist.files or []
    content: dict[str, bytes] = {}
    try:
        for file in files:
            path = str(file)
            parts = file.parts
            if path.startswith("..") or "__pycache__" in parts:
                continue
            if parts[0].endswith(".dist-info") and parts[-1] in _INSTALLER_FILES:
                continue
            content[path] = Path(str(file.locate())).read_bytes()
    except OSError:
        return None
    info = next((p.split("/")[0] for p in content if p.split("/")[0].endswith(".dist-info")),
                None)
    if info is None:
        return None
    wheel_meta = content.get(f"{info}/WHEEL", b"").decode("utf-8", "replace")
    tags = [line.split(":", 1)[1].strip() for line in wheel_meta.splitlines()
            if line.startswith("Tag:")]
    version = dist.version
    norm = canonicalize_name(dist.metadata["Name"]).replace("-", "_")
    name = f"{norm}-{version}-{tags[0] if tags else 'py3-none-any'}.whl"
    record = "".join(f"{p},{_record_hash(d)},{len(d)}\n" for p, d in content.items())
    record += f"{info}/RECORD,,\n"
    folder = _folder(distribution)
    # private to this user: whoever can write here chooses what a rollback installs
    cache_root().parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    cache_root().mkdir(exist_ok=True, mode=0o700)
    folder.mkdir(exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".part")
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for path, data in content.items():
                zf.writestr(path, data)
            zf.writestr(f"{info}/RECORD", record)
        try:
            packed = read_wheel(Path(tmp)).fingerprint
        except SigningError:
            return None
        if fingerprint is not None and packed != fingerprint:
            return None
        target = folder / name
        os.replace(tmp, target)
        return target
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def kept(distribution: str) -> list[Path]:
    """The wheels kept for `distribution`, most recently kept first."""
    folder = _folder(distribution)
    if not folder.is_dir():
        return []
    return sorted(folder.glob("*.whl"), key=lambda p: p.stat().st_mtime_ns, reverse=True)


def _version(wheel: Path) -> str:
    return wheel.name.split("-")[1]


def previous(distribution: str, installed: str | None) -> Path | None:
    """The wheel to go back to from the `installed` version: the highest kept version
    below it, else the most recently kept other version; None when none is kept."""
    others = [w for w in kept(distribution) if _version(w) != installed]
    if not others:
        return None
    try:
        now = Version(installed) if installed else None
        lower = [w for w in others if now is not None and Version(_version(w)) < now]
    except InvalidVersion:
        lower = []
    if lower:
        return max(lower, key=lambda w: Version(_version(w)))
    return others[0]
