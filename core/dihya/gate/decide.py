"""The gate: decide, without importing anything, whether a discovered plugin may be loaded.

Checks, in order: duplicate names, the allowlist (name, distribution, version), editable
installs, missing and unlisted files, the entry point's module being a file of the
distribution, every listed module resolving to its own file on the import path (nothing
shadows it, nothing runs in addition), the content fingerprint, then the switches
(environment, config) and declared dependencies.
"""

from __future__ import annotations

import functools
import importlib.metadata as md
import os
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs
from packaging.version import InvalidVersion, Version

from dihya.gate import pathmemo, verifycache
from dihya.gate.discovery import DiscoveredPlugin, discover, requires_of
from dihya.gate.fingerprint import (
    FingerprintError,
    InstalledFiles,
    inspect_installed,
    shared_realpaths,
)
from dihya.gate.resolution import find_shadowing
from dihya.names import bare_name, canonical_name
from dihya.reasons import REASONS_BY_STATUS, DihyaError, Reason, Status

if TYPE_CHECKING:  # a sandbox worker verifies its plugin here and needs neither (#16)
    from packaging.requirements import Requirement

    from dihya.config import AllowEntry, Config

# the statuses as the gate's callers name them (members of dihya.reasons.Status)
ACTIVE: Final = Status.ACTIVE
DISABLED: Final = Status.DISABLED
REFUSED: Final = Status.REFUSED
FAILED: Final = Status.FAILED
SHADOWED_MODULE: Final = Reason.SHADOWED_MODULE
STATUSES: Final = REASONS_BY_STATUS


@attrs.frozen
class Verdict:
    """What the gate decided about one discovered plugin, before any import."""

    plugin: DiscoveredPlugin
    status: str | None  # None: passed the gate, may be loaded
    reason: str | None
    message: str
    entry: AllowEntry | None
    fingerprint: str | None
    # the installed files the fingerprint covers (relative to site-packages), when admitted
    files: tuple[str, ...] = attrs.field(default=(), eq=False, repr=False)

    @property
    def admitted(self) -> bool:
        return self.status is None


def _verdict(plugin: DiscoveredPlugin, status: str | None, reason: str | None, message: str,
             entry: AllowEntry | None = None, fingerprint: str | None = None,
             files: tuple[str, ...] = ()) -> Verdict:
    return Verdict(plugin, status, reason, message, entry, fingerprint, files)


# Installed versions looked up while one `assess_all` runs: (name, path) -> version. Many
# plugins require the same distributions (the core at least), each a scan of the path.
_VERSIONS: ContextVar[dict[tuple[str, tuple[str, ...] | None], str | None] | None] = (
    ContextVar("dihya_gate_versions", default=None))


def assess_all(plugins: Sequence[DiscoveredPlugin], config: Config, disabled_by_env: frozenset[str],
               path: Sequence[str] | None = None,
               switches: Mapping[str, tuple[str, str]] | None = None) -> list[Verdict]:
    """A verdict for each discovered plugin, in the order given."""
    counts = Counter(p.name for p in plugins)
    by_name: dict[str, list[AllowEntry]] = {}
    for e in config.allow:  # one pass: `entries_for` per plugin would be quadratic in N
        by_name.setdefault(e.name, []).append(e)
    token = _VERSIONS.set({})
    try:
        with shared_realpaths(), verifycache.saved(), pathmemo.one_pass():
            return [assess(p, config, disabled_by_env, path, duplicate=counts[p.name] > 1,
                           switches=switches, entries=tuple(by_name.get(p.name, ())))
                    for p in plugins]
    finally:
        _VERSIONS.reset(token)


def assess(plugin: DiscoveredPlugin, config: Config, disabled_by_env: frozenset[str],
           path: Sequence[str] | None = None, duplicate: bool = False,
           switches: Mapping[str, tuple[str, str]] | None = None,
           entries: Sequence[AllowEntry] | None = None) -> Verdict:
    """Run every check of the gate on one plugin (`entries`: the allowlist entries of its
    name, when the caller already looked them up)."""
    if duplicate:
        return _verdict(plugin, REFUSED, Reason.DUPLICATE_NAME,
                        f"more than one installed entry point is named {plugin.name!r}; "
                        "uninstall all but one distribution")
    if entries is None:
        entries = config.entries_for(plugin.name)
    if not entries:
        return _verdict(plugin, REFUSED, Reason.NOT_ALLOWLISTED,
                        f"not in the allowlist of {config.path}; approve it with "
                        f"`dihya plugins approve {plugin.name}`")
    entry = _closest_entry(plugin, entries)
    if _canonical(entry.distribution) != _canonical(plugin.distribution):
        return _verdict(plugin, REFUSED, Reason.DISTRIBUTION_MISMATCH,
                        f"approved from distribution {entry.distribution!r}, installed from "
                        f"{plugin.distribution!r}", entry)
    if entry.version != plugin.version:
        return _verdict(plugin, REFUSED, Reason.VERSION_MISMATCH,
                        f"approved version {entry.version}, installed {plugin.version}; "
                        "re-approve after reviewing the new version", entry)
    files, problem = verified_files(plugin, path)
    if problem is not None or files is None:
        reason, message = problem or (Reason.MISSING_FILE, "no files")
        # the fingerprint is said where the files are all there but would not run as hashed
        whole = files is not None and reason in (Reason.OUTSIDE_DISTRIBUTION,
                                                 Reason.SHADOWED_MODULE)
        return _verdict(plugin, REFUSED, reason, message, entry,
                        files.fingerprint if whole and files else None)
    if files.fingerprint != entry.fingerprint:
        return _verdict(plugin, REFUSED, Reason.FINGERPRINT_MISMATCH,
                        f"installed files hash to {files.fingerprint}, approved "
                        f"{entry.fingerprint}: the files changed since approval",
                        entry, files.fingerprint)
    if plugin.name in disabled_by_env:
        return _verdict(plugin, DISABLED, Reason.DISABLED_BY_ENV, "listed in DIHYA_PLUGINS_DISABLE",
                        entry, files.fingerprint)
    if switches and plugin.name in switches:
        code, message = switches[plugin.name]
        return _verdict(plugin, DISABLED, code, message, entry, files.fingerprint)
    if not entry.enabled:
        why = f": {entry.disabled_reason}" if entry.disabled_reason else ""
        return _verdict(plugin, DISABLED, Reason.DISABLED_BY_CONFIG,
                        f"enabled = false in {config.path}{why}", entry, files.fingerprint)
    missing = dependency_problems(plugin, path)
    if missing:
        return _verdict(plugin, FAILED, Reason.MISSING_DEPENDENCY, "; ".join(missing), entry,
                        files.fingerprint)
    return _verdict(plugin, None, None, "passed the gate", entry, files.fingerprint,
                    files.files)


def _closest_entry(plugin: DiscoveredPlugin, entries: Sequence[AllowEntry]) -> AllowEntry:
    if len(entries) == 1:  # the usual case: nothing to choose between
        return entries[0]
    dist = _canonical(plugin.distribution)

    def score(e: AllowEntry) -> int:
        same_dist = _canonical(e.distribution) == dist
        return same_dist * 2 + (same_dist and e.version == plugin.version)

    return max(entries, key=score)


@functools.lru_cache(maxsize=8192)
def _canonical(name: str) -> str:
    """`canonicalize_name(name)`, computed once per name (a rebuild compares the same
    names again)."""
    return canonical_name(name)


def find_installed(name: str, group: str, path: Sequence[str] | None = None
                   ) -> DiscoveredPlugin:
    """The one installed entry point named `name` (nothing is imported); PluginNotFound
    (reason `not-installed`, or `duplicate-name` when several distributions declare it)."""
    found = discover(group, path)
    matches = [p for p in found if p.name == name]
    installed = sorted({p.name for p in found})
    if not matches:
        raise PluginNotFound("not-installed", f"no installed plugin is named {name!r}",
                             installed)
    if len(matches) > 1:
        dists = ", ".join(p.distribution for p in matches)
        raise PluginNotFound(Reason.DUPLICATE_NAME, f"{name!r} is declared by several "
                             f"distributions ({dists}); uninstall all but one", installed,
                             matches)
    return matches[0]


class PluginNotFound(DihyaError):
    """No single installed plugin has the name asked for; `installed` lists the names,
    `matches` the entry points of that name (several, for `duplicate-name`)."""

    def __init__(self, reason: str, message: str, installed: Sequence[str],
                 matches: Sequence[DiscoveredPlugin] = ()) -> None:
        super().__init__(reason, message)
        self.installed = tuple(installed)
        self.matches = tuple(matches)


def verified_files(plugin: DiscoveredPlugin, path: Sequence[str] | None = None
                   ) -> tuple[InstalledFiles | None, tuple[str, str] | None]:
    """Every check of the gate that needs no allowlist, in one place for the registry, an
    approval and a sandbox worker (before it imports): the installed files (none missing,
    none unlisted, not editable) and their fingerprint, the entry point's module among
    them, and nothing shadowing them on `path`. The files (when they could be read) and
    a (reason, message) refusal, or None."""
    files, problem = inspect_files(plugin)
    if problem is not None or files is None:
        return files, problem
    outside = resolution_problem(plugin, files)
    if outside:
        return files, (Reason.OUTSIDE_DISTRIBUTION, outside)
    shadowed = shadowing_problem(plugin, files, path)
    if shadowed:
        return files, (Reason.SHADOWED_MODULE, shadowed)
    return files, None


def inspect_files(plugin: DiscoveredPlugin) -> tuple[InstalledFiles | None,
                                                     tuple[str, str] | None]:
    """Fingerprint the plugin's distribution, or a (reason, message) refusal."""
    if plugin.editable:
        return None, (Reason.OUTSIDE_DISTRIBUTION,
                      f"{plugin.distribution} is an editable install: its code lives in a "
                      "source tree that no fingerprint covers; install a built wheel instead")
    if plugin.dist_info is None:
        return None, (Reason.OUTSIDE_DISTRIBUTION,
                      f"{plugin.distribution} has no installed files to verify")
    cache = pathmemo.shared_cache()
    misses = -1 if cache is None else cache.misses
    try:
        files = (inspect_installed(plugin.dist_info) if cache is None
                 else cache.inspect(plugin.dist_info, pathmemo.key_of))
    except FingerprintError as exc:
        pathmemo.note_unkeyed()  # not answered by keys
        return None, (Reason.MISSING_FILE, str(exc))
    if cache is None or cache.misses != misses:
        pathmemo.note_unkeyed()  # hashed, not answered by keys
    if files.missing:
        return files, (Reason.MISSING_FILE, f"listed in RECORD but missing: "
                       f"{', '.join(files.missing[:5])}")
    if files.unlisted:
        return files, (Reason.UNLISTED_FILE, f"code files in the package that RECORD does not "
                       f"list: {', '.join(files.unlisted[:5])}")
    return files, None


def resolution_problem(plugin: DiscoveredPlugin, files: InstalledFiles) -> str | None:
    """Why the entry point's module is not a file of the plugin's distribution, or None."""
    module = plugin.module
    stem = module.replace(".", "/")
    listed = files.files
    if stem + ".py" not in listed and stem + "/__init__.py" not in listed:
        return (f"module {module!r} of entry point {plugin.value!r} is not a file of "
                f"{plugin.distribution}")
    return None


def shadowing_problem(plugin: DiscoveredPlugin, files: InstalledFiles,
                      path: Sequence[str] | None = None) -> str | None:
    """Why importing the plugin would not run exactly its verified files, or None.

    Every module and package the distribution lists is resolved on `path` (default: the
    real `sys.path` and `sys.meta_path`) as the import system would: another file found
    first (an earlier path entry, a package directory beside a module, a built-in name), or
    a namespace package it uses turned into a regular one (an added `__init__.py`), is a
    refusal with reason `shadowed-module` (`SHADOWED_MODULE`); the message names the file.
    Imports nothing. The sandbox worker runs it again on its own import path.
    """
    site = site_packages(plugin)
    if site is None:
        return f"{plugin.distribution} has no installed files to verify"
    found = find_shadowing(site, files.files, path)
    if found is None:
        return None
    return f"{plugin.distribution}: {found.message}"


def site_packages(plugin: DiscoveredPlugin) -> Path | None:
    """`plugin.site_packages`: one `Path` per site directory, not one per plugin or call
    (its string, which resolution and the loader's direct imports ask for, is made once for
    all the plugins of that directory). A `Path` is normalized, so the directory part of
    its string is its parent's string ("" for a bare name: ".")."""
    if plugin.dist_info is None:
        return None
    # asked three times per plugin and build: one cache lookup by the `*.dist-info` path's
    # string, not its `dirname` each time
    return _site_of(os.fspath(plugin.dist_info))


@functools.lru_cache(maxsize=8192)
def _site_of(dist_info: str) -> Path:
    return _site(os.path.dirname(dist_info) or ".")


@functools.lru_cache(maxsize=8192)
def _site(directory: str) -> Path:
    return Path(directory)


def dependency_problems(plugin: DiscoveredPlugin, path: Sequence[str] | None = None) -> list[str]:
    """Requirements of the plugin's distribution that the environment does not satisfy."""
    dist = plugin.entry_point.dist
    return requirement_problems((requires_of(dist) if dist is not None else None) or [], path)


def requirement_problems(requires: Sequence[str], path: Sequence[str] | None = None
                         ) -> list[str]:
    """Requirements (after markers) that the environment on `path` does not satisfy."""
    if _VERSIONS.get() is None:
        return _requirement_problems(requires, path)
    # inside one gate pass the installed versions are fixed: the same requirements (most
    # plugins require the same core) give the same answer
    key = ("requirements", tuple(requires), None if path is None else tuple(path))
    return list(pathmemo.per_pass(key, lambda: _requirement_problems(requires, path)))


def _requirement_problems(requires: Sequence[str], path: Sequence[str] | None) -> list[str]:
    problems = []
    for text in requires:
        if bare_name(text):
            # a name alone (`dihya-core`): what `Requirement(text)` reads as that name with
            # no marker and an empty specifier, which admits any installed version that
            # parses. Anything else, an installed version that does not parse included,
            # goes the whole way below (`packaging.requirements` and its markers, ≈ 10 ms
            # to import, are imported only then).
            installed = _installed_version(text, path)
            if installed is None:
                problems.append(f"requires {text} but {text} is not installed")
                continue
            if _parses(installed):
                continue
        from packaging.markers import UndefinedEnvironmentName
        from packaging.requirements import InvalidRequirement

        try:
            req = _requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
        except (InvalidRequirement, UndefinedEnvironmentName) as exc:
            problems.append(f"unreadable requirement {text!r}: {exc}")
            continue
        installed = _installed_version(req.name, path)
        if installed is None:
            problems.append(f"requires {req} but {req.name} is not installed")
        elif not req.specifier.contains(installed, prereleases=True):
            problems.append(f"requires {req} but {req.name} {installed} is installed")
    return problems


@functools.lru_cache(maxsize=4096)
def _requirement(text: str) -> Requirement:
    """`Requirement(text)`, parsed once per text (most plugins require the same core)."""
    from packaging.requirements import Requirement

    return Requirement(text)


@functools.lru_cache(maxsize=4096)
def _parses(version: str) -> bool:
    """Whether `version` is a PEP 440 version (`packaging.version.Version` reads it)."""
    try:
        Version(version)
    except InvalidVersion:
        return False
    return True


def _installed_version(name: str, path: Sequence[str] | None) -> str | None:
    cache = _VERSIONS.get()
    if cache is None:
        return _lookup_version(name, path)
    key = (name, None if path is None else tuple(path))
    if key not in cache:
        cache[key] = _lookup_version(name, path)
    return cache[key]


def _lookup_version(name: str, path: Sequence[str] | None) -> str | None:
    """The version of `name` first found on `path`: remembered while no path entry changed
    (a distribution added, removed or renamed changes its directory) and the found
    distribution's METADATA is unchanged (`dihya.gate.pathmemo`)."""
    if not pathmemo.enabled():
        return _scan_version(name, path)[0]
    top = tuple(sys.path if path is None else path)
    if path is None and not all(pathmemo.standard_metadata_finder(f) for f in sys.meta_path):
        pathmemo.note_unkeyed()
        return _scan_version(name, path)[0]

    def compute() -> tuple[str | None, list[pathmemo.Check] | None]:
        version, where = _scan_version(name, path)
        checks = list(pathmemo.per_pass(("version-env", top), lambda: pathmemo.path_checks(top)))
        if where is not None:
            checks += pathmemo.checks([where, os.path.join(where, "METADATA"),
                                       os.path.join(where, "PKG-INFO")])
        elif version is not None:
            return version, None  # not a directory of metadata: not remembered
        return version, checks

    relative = any(not os.path.isabs(e) for e in top)
    key = (name, top, path is None, pathmemo.cwd() if relative else None)
    return pathmemo.memoized("version", key, compute)


pathmemo.persist("version")


def _scan_version(name: str, path: Sequence[str] | None) -> tuple[str | None, str | None]:
    """(version, the distribution's metadata directory when it is one) of `name`."""
    dist: md.Distribution | None
    if path is None:
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            dist = None
    else:
        dist = next(iter(md.distributions(name=name, path=list(path))), None)
    if dist is None:
        return None, None
    where = getattr(dist, "_path", None)  # a PathDistribution's directory
    version: str = dist.version
    return version, os.fspath(where) if isinstance(where, os.PathLike) else None

