"""The way back of an upgrade: installed plugin versions kept as wheels in the user's cache.

Before `dihya plugins install` replaces an installed plugin distribution, `keep_installed`
packs its installed files back into a wheel (the files RECORD lists inside site-packages,
with the dist-info's METADATA, WHEEL and entry_points.txt; installer files and bytecode
left out) under `$XDG_CACHE_HOME/dihya/wheels/<distribution>/` (`~/.cache/...` by
default). The content fingerprint of that wheel is the one the installed files had, so it
is kept only when the two match: what comes back is exactly what was approved. `previous`
finds the version to go back to: the highest kept version below the installed one, else
the most recently kept other version.

A version installed signed keeps its publisher's signature beside it (`keep_signature`,
at install time: `<distribution>/<version>-<first 16 hex digits of its fingerprint>.sig`,
mode 0600), since the repacked wheel is not the archive that was signed.
`verify_kept_signature` checks it for a kept wheel with the publishers trusted now
(`dihya.gate.signing.verify_kept`: distribution, version and content fingerprint, not the
archive's sha256), so a rollback records that publisher again; the .sig only says who
signed, a cache that fails to verify yields no publisher.

The cache is never pruned by age or count: a wheel stays until the same version is kept
again (replacing it). A kept signature goes with its wheel: `prune_signatures` removes
every `.sig` of the distribution that names neither a kept wheel (its version and
fingerprint) nor the version just installed, and runs whenever a wheel or a signature is
kept (so a replaced wheel's signature, or one left by an uninstalled version, goes at the
next install or rollback of that distribution). It never removes the signature of a kept
wheel; one whose wheel cannot be read keeps every signature of its version.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import importlib.metadata as md
import os
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from dihya.config.publishers import Publisher
from dihya.gate.signing import (
    MAX_SIG_BYTES,
    SigningError,
    Verified,
    WheelFacts,
    read_wheel,
    verify_kept,
)

#: `verify_kept_signature`: no signature was kept for that version and fingerprint
NO_KEPT_SIGNATURE: Final = "no-kept-signature"

# written by installers, not part of what was published (as the fingerprint leaves them out)
_INSTALLER_FILES = frozenset({"RECORD", "INSTALLER", "REQUESTED", "direct_url.json",
                              "RECORD.jws", "RECORD.p7s"})


def cache_root() -> Path:
    """`$XDG_CACHE_HOME/dihya/wheels`, else `~/.cache/dihya/wheels`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dihya" / "wheels"


def _folder(distribution: str) -> Path:
    return cache_root() / canonicalize_name(distribution)


def _make_folder(distribution: str) -> Path:
    folder = _folder(distribution)
    # private to this user: whoever can write here chooses what a rollback installs
    cache_root().parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    cache_root().mkdir(exist_ok=True, mode=0o700)
    folder.mkdir(exist_ok=True, mode=0o700)
    return folder


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
    folder = _make_folder(distribution)
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
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    prune_signatures(distribution)
    return target


def signature_path(distribution: str, version: str, fingerprint: str) -> Path | None:
    """Where the signature of `distribution` `version` with the content `fingerprint` is
    kept: `<cache>/<distribution>/<version>-<16 hex digits>.sig`; None for a version that
    is no valid version (it could name another path). The file name only finds the
    signature: verifying it compares the whole fingerprint."""
    try:
        normal = str(Version(version))
    except InvalidVersion:
        return None
    digits = fingerprint.removeprefix("sha256:")[:16]
    if len(digits) != 16 or not all(c in "0123456789abcdef" for c in digits):
        return None
    return _folder(distribution) / f"{normal}-{digits}.sig"


def keep_signature(facts: WheelFacts, sig: Path) -> Path | None:
    """Keep `sig`, the signature `facts`' wheel was installed with, where
    `signature_path` says (written atomically, mode 0600, replacing an older copy);
    its path, or None when the version or fingerprint cannot name one or the .sig is
    larger than a signature can be. OSError when the cache cannot be written."""
    target = signature_path(facts.distribution, facts.version, facts.fingerprint)
    if target is None:
        return None
    data = sig.read_bytes()
    if len(data) > MAX_SIG_BYTES:
        return None
    _make_folder(facts.distribution)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    prune_signatures(facts.distribution, keep=target)
    return target


def _signature_prefix(version: str) -> str | None:
    """The start of every kept signature name of `version` (`<normal version>-`)."""
    try:
        return f"{Version(version)}-"
    except InvalidVersion:
        return None


def prune_signatures(distribution: str, keep: Path | None = None) -> list[Path]:
    """Remove the kept signatures of `distribution` whose wheel is not kept (replaced by
    another copy of its version, never kept, or its version uninstalled), except `keep`
    (the signature of the version just installed, whose wheel is kept only when it is
    replaced in turn). A kept wheel's signature is never removed: a wheel that cannot be
    read keeps every signature of the version its file name says. The paths removed; a
    file that cannot be removed is left for the next prune."""
    folder = _folder(distribution)
    if not folder.is_dir():
        return []
    wanted: set[str] = set() if keep is None else {keep.name}
    versions: set[str] = set()  # unreadable kept wheels: every .sig of their version stays
    for wheel in folder.glob("*.whl"):
        try:
            facts = read_wheel(wheel)
        except SigningError:
            prefix = _signature_prefix(_version(wheel)) if "-" in wheel.name else None
            if prefix is None:
                return []  # cannot tell which signature is its own: remove none
            versions.add(prefix)
            continue
        own = signature_path(distribution, facts.version, facts.fingerprint)
        if own is not None:
            wanted.add(own.name)
    removed = []
    for sig in folder.glob("*.sig"):
        if sig.name in wanted or any(sig.name.startswith(v) for v in versions):
            continue
        try:
            sig.unlink()
        except OSError:
            continue
        removed.append(sig)
    return removed


def verify_kept_signature(facts: WheelFacts, publishers: Sequence[Publisher]) -> Verified:
    """The publisher whose signature, kept when that version was installed, vouches for
    the kept wheel of `facts` (`dihya.gate.signing.verify_kept`, with the `publishers`
    trusted now). SigningError (NO_KEPT_SIGNATURE, or a reason of `verify_kept`) when none
    does: the rollback is then approved by the operator."""
    sig = signature_path(facts.distribution, facts.version, facts.fingerprint)
    if sig is None or not sig.is_file():
        raise SigningError(NO_KEPT_SIGNATURE,
                           f"no signature of {facts.distribution} {facts.version} with "
                           f"{facts.fingerprint} is kept in {_folder(facts.distribution)} "
                           "(it was installed unsigned, or before signatures were kept)")
    return verify_kept(facts, sig, publishers)


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
