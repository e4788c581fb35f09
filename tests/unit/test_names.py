"""`dihya.names` and the gate's requirement check without the parser: the same answers as
`packaging` (what a user sees through the cheap path is what the whole way gives).

The reference below is the gate's requirement check as it was before the bare-name path
(`packaging.requirements` for every text); the gate's answer must be the same for names
alone, ranges, markers, extras, unreadable texts, and installed versions that are plain,
pre-releases, local or not PEP 440 at all.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from packaging.markers import UndefinedEnvironmentName
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from dihya.gate import decide
from dihya.names import bare_name, canonical_name

ROOT = Path(__file__).resolve().parents[2]

NAMES = ["dihya-core", "Dihya_Core", "dihya.core", "DIHYA--core", "a", "A1", "a_-_.b",
         "x.y_z-w", "Ünïcode_Name", "İstanbul", "name-", "-name", "_", "", "a b", "0"]

TEXTS = [
    # names alone: the cheap path
    "dihya-core", "Dihya_Core", "dihya.core", "a", "a1-b.c_d", "missing-xyz", "MISSING_xyz",
    "prerel", "Prerel", "local-v", "junk-v", "a..b", "a--b",
    # anything else: the whole way
    "dihya-core>=0.1", "dihya-core>=99", "prerel>=1.0", "junk-v>=1", "junk-v==junk",
    "a; python_version < '3'", "missing-xyz; python_version >= '3'", "a[extra]",
    " a", "a ", "a-", "-a", "a b", "a;", "a @ https://example.invalid/a.whl", "a; extra == 'x'",
    "a; nonsense == 'x'", "a>=", "Ünïcode", "",
]


def _reference(requires: Sequence[str], path: Sequence[str]) -> list[str]:
    """The gate's check before the bare-name path: `packaging` parses every text."""
    problems = []
    for text in requires:
        try:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
        except (InvalidRequirement, UndefinedEnvironmentName) as exc:
            problems.append(f"unreadable requirement {text!r}: {exc}")
            continue
        installed = decide._lookup_version(req.name, path)
        if installed is None:
            problems.append(f"requires {req} but {req.name} is not installed")
        elif not req.specifier.contains(installed, prereleases=True):
            problems.append(f"requires {req} but {req.name} {installed} is installed")
    return problems


def _dist(site: Path, name: str, version: str) -> None:
    info = site / f"{name.replace('-', '_')}-{version.replace('-', '_')}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "RECORD").write_text("")


@pytest.fixture()
def site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    for name, version in [("dihya-core", "0.1.0"), ("a", "1.0"), ("a1-b.c_d", "2"),
                          ("prerel", "1.0rc1"), ("local-v", "1.0+abc"), ("junk-v", "junk"),
                          ("a..b", "1"), ("a--b", "1")]:
        _dist(site, name, version)
    return site


@pytest.mark.parametrize("name", NAMES)
def test_canonical_name_is_packagings(name: str) -> None:
    assert canonical_name(name) == canonicalize_name(name)


@pytest.mark.parametrize("text", TEXTS + NAMES)
def test_a_bare_name_is_what_packaging_reads_as_a_name_alone(text: str) -> None:
    if not bare_name(text):
        return  # the whole way: nothing to compare
    req = Requirement(text)
    assert (req.name, str(req), req.extras, req.url, req.marker, str(req.specifier)) == (
        text, text, set(), None, None, "")


@pytest.mark.parametrize("text", TEXTS)
def test_the_gate_answers_each_requirement_as_packaging_does(site: Path, text: str) -> None:
    assert decide._requirement_problems([text], [str(site)]) == _reference([text], [str(site)])


def test_the_gate_answers_a_whole_list_as_packaging_does(site: Path) -> None:
    """Inside a gate pass too (the versions and answers remembered per pass)."""
    token = decide._VERSIONS.set({})
    try:
        got = decide.requirement_problems(TEXTS, [str(site)])
    finally:
        decide._VERSIONS.reset(token)
    assert got == _reference(TEXTS, [str(site)])
    assert any("missing-xyz" in p for p in got)  # the cheap path still refuses


def test_a_listing_imports_no_requirement_parser(tmp_path: Path) -> None:
    """Not timed: a fresh process checking names alone imports neither the requirement
    parser nor `packaging.utils` (and its platform probes); one range imports them."""
    site = tmp_path / "site"
    site.mkdir()
    _dist(site, "dihya-core", "0.1.0")
    probe = ("import sys\n"
             "from dihya.gate import decide\n"
             "print(decide.requirement_problems(sys.argv[2].split(','), [sys.argv[1]]))\n"
             "print(sorted(m for m in ('packaging.requirements', 'packaging.markers', "
             "'packaging.specifiers', 'packaging.utils', 'difflib') if m in sys.modules))\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT / "core"), os.environ.get("PYTHONPATH", "")]))
    lines = {}
    for requires in ("dihya-core,missing-xyz", "dihya-core>=99"):
        done = subprocess.run([sys.executable, "-c", probe, str(site), requires], env=env,
                              capture_output=True, text=True, timeout=120, check=True)
        lines[requires] = done.stdout.splitlines()
    assert lines["dihya-core,missing-xyz"] == [
        "['requires missing-xyz but missing-xyz is not installed']", "[]"]
    assert lines["dihya-core>=99"][1] == (
        "['packaging.markers', 'packaging.requirements', 'packaging.specifiers', "
        "'packaging.utils']")
