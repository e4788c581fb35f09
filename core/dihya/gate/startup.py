"""Code that runs when the interpreter starts, before any gate: `.pth` files that execute.

At start-up, `site` reads every `*.pth` file of each site directory and executes each line
that starts with `import` followed by a space or a tab. That code runs in the backend (and
in every `dihya` command) before the core is imported: no allowlist can stop it, and a
distribution merely installed, approved or not, can ship such a file. The gate can only
report them: this module finds them (in the directories `site` processes: its site
packages, the user site when enabled, the virtual environment's site-packages), names the
distribution whose RECORD lists each one, hashes its content, and says whether the operator
acknowledged that exact content (`[[plugins.known_pth]]`) or it is one of the
`distutils-precedence.pth` files setuptools ships, acknowledged out of the box.

`[[plugins.known_pth]]` entries (`file`, `sha256`, optional `note`) are parsed here too,
like `[[plugins.publishers]]` in `dihya.config.publishers`, so the config module stays a reader.
"""

from __future__ import annotations

import hashlib
import os
import site
import sys
import sysconfig
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import attrs

from dihya.config.knownpth import KnownPth
from dihya.gate import pathmemo
from dihya.gate.fingerprint import IMPORTABLE_SUFFIXES, record_paths

#: The `distutils-precedence.pth` that setuptools installs with itself (and that `python -m
#: venv` puts in every new venv through its bundled setuptools), by exact content, with the
#: setuptools wheels it was read from. Anything else, or an edited copy, is unacknowledged.
SETUPTOOLS_PTH: Final = "distutils-precedence.pth"
SETUPTOOLS_PTH_SHA256: Final = {
    # enabled = os.environ.get('SETUPTOOLS_USE_DISTUTILS') == 'local'
    "f1701c42efb4c8e791fbb314ed0843c7f83744e70167d2475e752889b7862d8b": "setuptools 49.3-49.6",
    # enabled = os.environ.get(var, 'stdlib') == 'local'
    "7ea7ffef3fe2a117ee12c68ed6553617f0d7fd2f0590257c25c484959a3b7373": "setuptools 50.3-59.8",
    # enabled = os.environ.get(var, 'local') == 'local'
    "2638ce9e2500e572a5e0de7faed6661eb569d1b696fcba07b0dd223da5f5d224":
        "setuptools 50.0, 60.0-84.2 (and the 65.5.0 that venv bundles with Python 3.11)",
}
#: Who acknowledged a `.pth` file: the operator's config, or this list of setuptools' own.
BY_CONFIG: Final = "config"
BY_SETUPTOOLS: Final = "builtin"
_IMPORT_LINE: Final = ("import ", "import\t")


@attrs.frozen
class PthFile:
    """A `.pth` file that executes code at interpreter start."""

    path: str
    sha256: str | None  # None: it could not be read (it is then never acknowledged)
    owner: str | None  # the distribution whose RECORD lists it; None: no owner
    acknowledged_by: str | None  # BY_CONFIG, BY_SETUPTOOLS, or None

    @property
    def file(self) -> str:
        return os.path.basename(self.path)

    @property
    def acknowledged(self) -> bool:
        return self.acknowledged_by is not None

    def to_json(self, with_path: bool = True) -> dict[str, Any]:
        """The `pth` items of `plugins list|show|verify --json` (`path` left out on the
        unauthenticated `/readyz`)."""
        data: dict[str, Any] = {"file": self.file}
        if with_path:
            data["path"] = self.path
        data.update(owner=self.owner, sha256=self.sha256, acknowledged=self.acknowledged,
                    acknowledged_by=self.acknowledged_by)
        return data

    def describe(self) -> str:
        """One line for people: where, who owns it, whether it is acknowledged."""
        owner = self.owner or "no owner"
        if self.acknowledged_by == BY_SETUPTOOLS:
            state = "acknowledged (setuptools' own, unchanged)"
        elif self.acknowledged_by == BY_CONFIG:
            state = "acknowledged in the config"
        elif self.sha256 is None:
            state = "NOT acknowledged: it cannot be read, so its content cannot be pinned"
        else:
            state = (f"NOT acknowledged (sha256 {self.sha256[:16]}…): review it, then "
                     f"`dihya plugins acknowledge-pth {self.file}`")
        return f"{self.path} ({owner}) runs code at interpreter start; {state}"


def site_directories() -> tuple[str, ...]:
    """The directories whose `.pth` files `site` processes for this interpreter, in order,
    those that exist, each once."""
    candidates = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        candidates.append(site.getusersitepackages())
    if sys.prefix != sys.base_prefix:  # a venv's own site-packages, whatever site reports
        paths = sysconfig.get_paths()
        candidates += [paths["purelib"], paths["platlib"]]
    seen: set[str] = set()
    found = []
    for directory in candidates:
        real = os.path.realpath(directory)
        if real not in seen and os.path.isdir(real):
            seen.add(real)
            found.append(directory)
    return tuple(found)


def runs_code(data: bytes) -> bool:
    """True if `site` would execute a line of this `.pth` content.

    Decoded as leniently as any Python version reads it (UTF-8 with or without a BOM, bad
    bytes kept), split on universal newlines: a line that starts with `import` and a space
    or a tab is executed; every other line is a path, a comment or blank.
    """
    text = data.decode("utf-8", "surrogateescape").removeprefix("\ufeff")
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return any(line.startswith(_IMPORT_LINE) for line in lines)


def scan_pth(known: Sequence[KnownPth] = (),
             directories: Sequence[str] | None = None) -> tuple[PthFile, ...]:
    """Every `.pth` file that executes code, in the order `site` runs them, and every
    `sitecustomize`/`usercustomize` module in the site directories (which `site` imports
    after them).

    Each directory's answer is remembered while the directory, its `.pth` files and (when
    one runs code) the RECORDs that could name its owner are unchanged
    (`dihya.gate.pathmemo`)."""
    acknowledged = frozenset((k.file, k.sha256) for k in known)
    found: list[PthFile] = []
    with pathmemo.one_pass():
        for directory in site_directories() if directories is None else directories:
            relative = None if os.path.isabs(directory) else pathmemo.cwd()
            found += pathmemo.memoized(
                "pth", (directory, relative, acknowledged),
                lambda d=directory: _scan_directory(d, acknowledged))  # type: ignore[misc]
    return tuple(found)


def _scan_directory(directory: str, acknowledged: frozenset[tuple[str, str]]
                    ) -> tuple[tuple[PthFile, ...], list[pathmemo.Check]]:
    """The `.pth` files of one directory that execute code, and what the answer depends on."""
    found: list[PthFile] = []
    checks = list(pathmemo.path_checks([directory]))
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return (), checks
    for name in names:
        if customize_module(name):
            found.append(_customize(directory, name, names, acknowledged, checks))
            continue
        if not name.endswith(".pth"):
            continue
        path = os.path.join(directory, name)
        checks += pathmemo.checks([path])
        try:
            with open(path, "rb") as fh:
                data: bytes | None = fh.read()
        except IsADirectoryError:
            continue
        except OSError:
            data = None  # unreadable here; `site` may read it as another user
        if data is not None and not runs_code(data):
            continue
        digest = hashlib.sha256(data).hexdigest() if data is not None else None
        owner, looked = _owner(directory, name, names)
        found.append(PthFile(path, digest, owner, _acknowledged_by(name, digest, acknowledged)))
        # the RECORDs read to find the owner (and its METADATA, for its name): their keys
        # too; an absent one is keyed on its directory
        for entry in looked:
            dist_info = os.path.join(directory, entry)
            files = ["RECORD", "METADATA"] if owner and entry == looked[-1] else ["RECORD"]
            read = pathmemo.checks(os.path.join(dist_info, f) for f in files)
            checks += read
            if any(key is None for _path, key in read):
                checks += pathmemo.checks([dist_info])
    return tuple(found), checks


#: Modules `site` imports at start, from anywhere on the path: a distribution can ship one.
CUSTOMIZE_MODULES: Final = ("sitecustomize", "usercustomize")


def customize_module(name: str) -> bool:
    """True for a directory entry that `import sitecustomize` (or `usercustomize`) would
    load: `sitecustomize.py`, its bytecode or extension module, or a package directory."""
    stem, dot, _rest = name.partition(".")
    if stem not in CUSTOMIZE_MODULES:
        return False
    return not dot or name.endswith(IMPORTABLE_SUFFIXES)


def _customize(directory: str, name: str, names: Sequence[str],
               acknowledged: frozenset[tuple[str, str]],
               checks: list[pathmemo.Check]) -> PthFile:
    """A `sitecustomize`/`usercustomize` module in a site directory: every line of it runs
    at interpreter start, like a `.pth` file's `import` lines. A package of that name is
    reported by its `__init__.py` and cannot be acknowledged (remove it)."""
    path = os.path.join(directory, name)
    checks += pathmemo.checks([path])
    data: bytes | None = None
    if os.path.isdir(path):
        checks += pathmemo.path_checks([path])
        path = os.path.join(path, "__init__.py")
        checks += pathmemo.checks([path])
        record_name = f"{name}/__init__.py"
    else:
        record_name = name
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError:
            data = None
    digest = hashlib.sha256(data).hexdigest() if data is not None else None
    owner, looked = _owner(directory, record_name, names)
    for entry in looked:
        checks += pathmemo.checks([os.path.join(directory, entry, "RECORD"),
                                   os.path.join(directory, entry, "METADATA"),
                                   os.path.join(directory, entry)])
    return PthFile(path, digest, owner, _acknowledged_by(name, digest, acknowledged))


def _acknowledged_by(name: str, digest: str | None,
                     acknowledged: frozenset[tuple[str, str]]) -> str | None:
    if digest is None:
        return None
    if (name, digest) in acknowledged:
        return BY_CONFIG
    if name == SETUPTOOLS_PTH and digest in SETUPTOOLS_PTH_SHA256:
        return BY_SETUPTOOLS
    return None


def owner_of(directory: str, name: str, listing: Iterable[str]) -> str | None:
    """The distribution in `directory` whose RECORD lists the file `name`, or None."""
    return _owner(directory, name, listing)[0]


def _owner(directory: str, name: str, listing: Iterable[str]) -> tuple[str | None, list[str]]:
    """`owner_of`, and the `*.dist-info` entries whose RECORD was looked at (the owner's
    last): what the answer depends on."""
    looked: list[str] = []
    for entry in listing:
        if not entry.endswith(".dist-info"):
            continue
        looked.append(entry)
        if _lists(os.path.join(directory, entry, "RECORD"), name):
            return _distribution_name(os.path.join(directory, entry), entry), looked
    return None, looked


def _lists(record_path: str, name: str) -> bool:
    """True if the RECORD at `record_path` lists the file `name`; remembered while the
    RECORD is unchanged (its key; an absent one: its directory's), so a changed site
    directory costs a `stat` per RECORD, not a read."""

    def compute() -> tuple[bool, list[pathmemo.Check]]:
        checks = list(pathmemo.checks([record_path]))
        if checks[0][1] is None:
            checks += pathmemo.checks([os.path.dirname(record_path)])
        try:
            with open(record_path, "rb") as fh:
                record = fh.read()
        except OSError:
            return False, checks
        if name.encode("utf-8", "surrogateescape") not in record:
            return False, checks  # most RECORDs: one substring search, no CSV parsing
        rows = record_paths(record.decode("utf-8", "surrogateescape"))
        return any(os.path.normpath(row) == name for row in rows), checks

    return pathmemo.memoized("pth.record", (record_path, name), compute)


def _distribution_name(dist_info: str, entry: str) -> str:
    try:
        with open(os.path.join(dist_info, "METADATA"), encoding="utf-8",
                  errors="replace") as fh:
            for line in fh:
                if line.startswith("Name:"):
                    return line[len("Name:"):].strip()
                if not line.strip():
                    break
    except OSError:
        pass
    return entry[: -len(".dist-info")].rpartition("-")[0] or entry


pathmemo.persist("pth",
                 lambda found: tuple((p.path, p.sha256, p.owner, p.acknowledged_by)
                                     for p in found),
                 lambda data: tuple(PthFile(*row) for row in data))
pathmemo.persist("pth.record")


def pth_json(found: Iterable[PthFile], with_path: bool = True) -> list[dict[str, Any]]:
    return [p.to_json(with_path) for p in found]


def unacknowledged(found: Iterable[PthFile]) -> list[PthFile]:
    return [p for p in found if not p.acknowledged]


def known_entry(pth: PthFile, note: str | None = None) -> Mapping[str, str]:
    """The `[[plugins.known_pth]]` values that acknowledge `pth` as it is now."""
    if pth.sha256 is None:
        raise ValueError(f"{pth.path} cannot be read: its content cannot be acknowledged")
    values = {"file": pth.file, "sha256": pth.sha256}
    if note:
        values["note"] = note
    return values
