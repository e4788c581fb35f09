"""Trusted publishers (`[[plugins.publishers]]`): who may sign which distributions.

A publisher is a name, an Ed25519 public key in the text form `ed25519:<base64 of the 32
raw bytes>` (what `dihya plugins keygen` prints) and the distributions it may sign: exact
names, or a glob with `*` (`dihya-plugin-acme-*`), compared after PEP 503 normalisation.
This module only parses and matches; it imports no cryptography, so reading a config
stays cheap. Signatures are made and checked in `dihya.gate.signing`.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import re
from collections.abc import Collection
from typing import Any, Final

import attrs

from dihya.names import canonical_name

PUBLIC_KEY_PREFIX: Final = "ed25519:"
PUBLISHER_KEYS: Final = frozenset({"name", "public_key", "distributions"})
_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DIST_PATTERN: Final = re.compile(r"^[A-Za-z0-9*][A-Za-z0-9._*-]*$")


@attrs.frozen
class Publisher:
    """One trusted publisher: its name, public key text and the distributions it may sign."""

    name: str
    public_key: str
    distributions: tuple[str, ...]

    @property
    def raw_key(self) -> bytes:
        return decode_public_key(self.public_key)

    def may_sign(self, distribution: str) -> bool:
        """True if `distribution` matches one of this publisher's names or globs."""
        wanted = canonical_name(distribution)
        return any(fnmatch.fnmatchcase(wanted, _canonical_pattern(p))
                   for p in self.distributions)


def _canonical_pattern(pattern: str) -> str:
    # canonicalize each literal run, keep the `*` wildcards
    return "*".join(canonical_name(part) if part else "" for part in pattern.split("*"))


def encode_public_key(raw: bytes) -> str:
    """The text form of a raw 32-byte Ed25519 public key."""
    return PUBLIC_KEY_PREFIX + base64.b64encode(raw).decode("ascii")


def decode_public_key(text: str) -> bytes:
    """The 32 raw bytes of `ed25519:<base64>`; ValueError saying what is wrong."""
    if not text.startswith(PUBLIC_KEY_PREFIX):
        raise ValueError(f"a public key must look like 'ed25519:<base64>' (as printed by "
                         f"`dihya plugins keygen`), not {text[:40]!r}")
    try:
        raw = base64.b64decode(text[len(PUBLIC_KEY_PREFIX):], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"the public key {text[:40]!r} is not valid base64") from exc
    if len(raw) != 32:
        raise ValueError(f"the public key {text[:40]!r} decodes to {len(raw)} bytes; an "
                         "Ed25519 public key has 32")
    return raw


def parse_publishers(raw: object) -> tuple[Publisher, ...]:
    """Validate the `plugins.publishers` array; ValueError naming the entry and the fault."""
    if not isinstance(raw, list):
        raise ValueError("`plugins.publishers` must be an array of tables "
                         "([[plugins.publishers]])")
    found: list[Publisher] = []
    for index, item in enumerate(raw, 1):
        found.append(_publisher(index, item))
    names = [p.name for p in found]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"[[plugins.publishers]]: the names {duplicates} are used more than "
                         "once; each publisher needs its own name")
    keys = [p.public_key for p in found]
    shared = [p.name for p in found if keys.count(p.public_key) > 1]
    if shared:
        raise ValueError(f"[[plugins.publishers]]: {shared} share one public key; give each "
                         "key one publisher entry")
    return tuple(found)


def array_entry(label: str, item: object,
                known: Collection[str]) -> tuple[dict[str, Any], str]:
    """One table of a TOML array of tables (`[[plugins.allow]]`, `[[plugins.publishers]]`)
    and its label for messages, with its name when it has one; ValueError when it is not a
    table or has keys outside `known`."""
    if not isinstance(item, dict):
        raise ValueError(f"{label} must be a table")
    if isinstance(item.get("name"), str):
        label += f" (name {item['name']!r})"
    unknown = set(item) - set(known)
    if unknown:
        raise ValueError(f"{label}: unknown keys {sorted(unknown)}; known: "
                         f"{', '.join(sorted(known))}{did_you_mean(unknown, known)}")
    return item, label


def did_you_mean(unknown: Collection[str], known: Collection[str]) -> str:
    """"; did you mean 'x'?" for the first of `unknown` that is close to one of `known`
    (a typo in a config key); "" when none is."""
    import difflib  # only for a word not found, not at every start

    for word in sorted(unknown):
        close = difflib.get_close_matches(word, sorted(known), n=1, cutoff=0.6)
        if close:
            which = f" (for {word!r})" if len(unknown) > 1 else ""
            return f"; did you mean {close[0]!r}{which}?"
    return ""


def _publisher(index: int, item: Any) -> Publisher:
    item, label = array_entry(f"[[plugins.publishers]] #{index}", item, PUBLISHER_KEYS)
    name = item.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"{label}: `name` is required: letters, digits, '.', '_' or '-' "
                         f"(at most 64), not {name!r}")
    key = item.get("public_key")
    if not isinstance(key, str):
        raise ValueError(f"{label}: `public_key` is required (a string 'ed25519:<base64>')")
    try:
        decode_public_key(key)
    except ValueError as exc:
        raise ValueError(f"{label}: `public_key`: {exc}") from exc
    dists = item.get("distributions")
    if (not isinstance(dists, list) or not dists
            or not all(isinstance(d, str) and _DIST_PATTERN.match(d) for d in dists)):
        raise ValueError(f"{label}: `distributions` is required: a non-empty list of "
                         f"distribution names or globs such as 'dihya-plugin-acme-*', not "
                         f"{dists!r}")
    if any(d.strip("*") == "" for d in dists):
        raise ValueError(f"{label}: `distributions` may not be a bare '*': name the "
                         "distributions (or a prefix such as 'dihya-plugin-acme-*')")
    return Publisher(name=name, public_key=key, distributions=tuple(dists))
