"""Distribution names as the core compares them, without importing `packaging.utils`.

`packaging.utils` imports `packaging.tags` (subprocess, platform, sysconfig, the manylinux
and musllinux probes): ≈ 5 ms of every `dihya` command's start for one string function.
`canonical_name` is PEP 503's normalisation, `re.sub(r"[-_.]+", "-", name).lower()`, the
text `packaging.utils.canonicalize_name` returns (tests compare the two). `bare_name` says
whether a requirement's text is a distribution name alone, which `packaging.requirements`
would read as that name with no extra, version, URL or marker (tests compare the two).
"""

from __future__ import annotations

import re
from typing import Final

_RUN: Final = re.compile(r"[-_.]+")
# PEP 508's name: ASCII letters and digits at both ends, `-`, `_`, `.` inside
_BARE: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")


def canonical_name(name: str) -> str:
    """PEP 503's normalised form of a distribution name (`Foo_Bar.baz` -> `foo-bar-baz`)."""
    return _RUN.sub("-", name).lower()


def bare_name(text: str) -> bool:
    """True when `text` is a requirement naming a distribution and nothing else."""
    return _BARE.fullmatch(text) is not None
