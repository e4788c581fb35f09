"""`[[plugins.known_pth]]`: the operator's acknowledgements of `.pth` files, as the config
holds them (the scan that compares them with the files is `dihya.gate.startup`)."""

from __future__ import annotations

import re
from typing import Final

import attrs

from dihya.config.publishers import array_entry

KNOWN_PTH_KEYS: Final = frozenset({"file", "sha256", "note"})
_SHA256: Final = re.compile(r"^[0-9a-fA-F]{64}$")


@attrs.frozen
class KnownPth:
    """An operator's acknowledgement of one `.pth` file's exact content."""

    file: str
    sha256: str
    note: str | None = None


def _customize(file: str) -> bool:
    """`sitecustomize.py` and the like: acknowledged the same way as a `.pth` file."""
    return file.partition(".")[0] in ("sitecustomize", "usercustomize") and "." in file


def parse_known_pth(raw: object) -> tuple[KnownPth, ...]:
    """`[[plugins.known_pth]]` as read from TOML; ValueError saying what to fix."""
    if not isinstance(raw, list):
        raise ValueError("`plugins.known_pth` must be an array of tables "
                         "([[plugins.known_pth]] with `file` and `sha256`)")
    return tuple(_known(i, item) for i, item in enumerate(raw, 1))


def _known(index: int, item: object) -> KnownPth:
    item, label = array_entry(f"[[plugins.known_pth]] #{index}", item, KNOWN_PTH_KEYS)
    file = item.get("file")
    if (not isinstance(file, str) or not (file.endswith(".pth") or _customize(file))
            or "/" in file or "\\" in file or file in (".pth",)):
        raise ValueError(f"{label}: `file` is required: the name of a .pth file without its "
                         f"directory (such as 'distutils-precedence.pth'), not {file!r}")
    digest = item.get("sha256")
    if not isinstance(digest, str) or not _SHA256.match(digest):
        raise ValueError(f"{label} ({file}): `sha256` is required: the 64 hex digits of the "
                         "file's SHA-256, as `dihya plugins verify` prints it (`dihya plugins "
                         f"acknowledge-pth {file}` writes the entry), not {digest!r}")
    note = item.get("note")
    if note is not None and not isinstance(note, str):
        raise ValueError(f"{label} ({file}): `note` must be a string")
    return KnownPth(file, digest.lower(), note)
