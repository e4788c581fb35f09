"""A wheel of the running dihya-core in the user's cache, for plugin tests when no index has it.

`dihya plugins new` records it in the new project's `tox.ini` and prints it in the project's
first commands; `dihya plugins core-wheel` prints its path (`DIHYA_CORE=$(dihya plugins
core-wheel) tox` in a copy of a bundled plugin). A core installed from a wheel or a
directory is packed again from its installed files (as listed by its RECORD, without
bytecode or scripts, with a new RECORD); an editable install is built from its source
tree with `pip wheel`. The file is replaced atomically, so a tox run reading it meanwhile
sees the old wheel or the new one, never half of one.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata as md
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Final
from urllib.parse import unquote, urlparse

from dihya.authoring.places import cache_home
from dihya.reasons import FixedReasonError

CORE_DISTRIBUTION: Final = "dihya-core"
_SKIPPED_META: Final = frozenset({"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"})
PIP_TIMEOUT_S: Final = 300.0
#: A fixed time for every entry: the same files make the same wheel, byte for byte.
_ZIP_TIME: Final = (2020, 1, 1, 0, 0, 0)


class CoreWheelError(FixedReasonError):
    """No wheel of the running core could be made (say why, and that DIHYA_CORE works)."""

    REASON = "core-wheel-failed"


def wheel_dir() -> Path:
    """`<cache home>/wheels`: where the core's wheel is written."""
    return cache_home() / "wheels"


def core_wheel(outdir: Path | None = None) -> Path:
    """A wheel of the dihya-core this interpreter runs, in `outdir` (default `wheel_dir()`);
    returns its path. `CoreWheelError` when it cannot be made."""
    outdir = outdir or wheel_dir()
    try:
        dist = md.distribution(CORE_DISTRIBUTION)
    except md.PackageNotFoundError as exc:
        raise CoreWheelError(f"{CORE_DISTRIBUTION} is not installed in {sys.prefix}") from exc
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CoreWheelError(f"cannot create {outdir}: {exc.strerror}") from exc
    source = _editable_source(dist)
    if source is not None:
        return _build(source, outdir, dist.version)
    return _repack(dist, outdir)


def _editable_source(dist: md.Distribution) -> Path | None:
    text = dist.read_text("direct_url.json")
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not data.get("dir_info", {}).get("editable"):
        return None
    url = urlparse(str(data.get("url", "")))
    return Path(unquote(url.path)) if url.scheme == "file" else None


def _name(version: str) -> str:
    return f"dihya_core-{version}-py3-none-any.whl"


def _build(source: Path, outdir: Path, version: str) -> Path:
    with tempfile.TemporaryDirectory(prefix="dihya-core-wheel-") as tmp:
        try:
            result = subprocess.run(
                [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                 "--disable-pip-version-check", "-w", tmp, str(source)],
                capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CoreWheelError(f"pip wheel {source} failed: {exc}") from exc
        built = sorted(Path(tmp).glob("dihya_core-*.whl"))
        if result.returncode != 0 or not built:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise CoreWheelError(f"pip wheel {source} failed: {' / '.join(tail)}")
        target = outdir / built[0].name
        _copy(built[0], target)
        return target


def _copy(source: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_bytes(source.read_bytes())
    os.replace(tmp, target)


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return f"sha256={digest.decode('ascii')}"


def _repack(dist: md.Distribution, outdir: Path) -> Path:
    files = dist.files
    if not files:
        raise CoreWheelError(f"{CORE_DISTRIBUTION} {dist.version} has no RECORD: reinstall it "
                             "with pip, or set DIHYA_CORE to a wheel or checkout of it")
    dist_info = f"dihya_core-{dist.version}.dist-info"
    entries: list[tuple[str, bytes]] = []
    for file in files:
        rel = file.as_posix()
        if rel.startswith("..") or "__pycache__" in file.parts or rel.endswith((".pyc",
                                                                                ".pyo")):
            continue  # scripts (pip writes them again), bytecode
        top = file.parts[0]
        if top.endswith(".dist-info"):
            if file.name in _SKIPPED_META:
                continue
            rel = "/".join((dist_info, *file.parts[1:]))
        try:
            entries.append((rel, Path(str(dist.locate_file(file))).read_bytes()))
        except OSError as exc:
            raise CoreWheelError(f"cannot read the installed file {rel}: {exc.strerror}") from exc
    record = [f"{rel},{_record_hash(data)},{len(data)}" for rel, data in entries]
    record.append(f"{dist_info}/RECORD,,")
    entries.append((f"{dist_info}/RECORD", ("\n".join(record) + "\n").encode("utf-8")))
    target = outdir / _name(dist.version)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for rel, data in sorted(entries, key=lambda e: (e[0].startswith(dist_info), e[0])):
                info = zipfile.ZipInfo(rel, _ZIP_TIME)
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, data)
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CoreWheelError(f"cannot write {target}: {exc.strerror}") from exc
    return target
