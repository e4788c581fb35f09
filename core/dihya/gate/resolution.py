"""Where the import system would find each module a distribution lists, importing nothing.

A plugin's verified files only matter if they are what `import` runs. For every module and
package the distribution's RECORD lists (`a/b/__init__.py` is `a.b`, `a/b/c.py` and
`a/b/c.<abi>.so` are `a.b.c`), this module asks the real import machinery where that name
resolves, in the order Python would: the `sys.meta_path` finders that come before
`PathFinder` (built-in and frozen modules; with the real `sys.path`, any finder a `.pth`
file inserted), then each path entry's own finder (`FileFinder`, `zipimporter`, …), first
spec with a loader wins, namespace portions gathered in path order; submodules against
their parent's search locations. It then compares each origin (real path) with the
listed files. A namespace package the distribution uses (a directory it ships modules in
without an `__init__`) must still resolve to a namespace package: an `__init__.py`, a
module or an extension of that name anywhere on the path would run in addition.

Nothing is imported and no module is executed: finders only look at directory listings
and file names (the same caches `import` uses, refreshed when a directory changes).
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import itertools
import os
import pkgutil
import sys
import time
from collections.abc import Iterable, Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import Any, Final

import attrs

from dihya.gate import pathmemo
from dihya.gate.fingerprint import IMPORTABLE_SUFFIXES, realpath, realpath_of_file
from dihya.gate.verifycache import StatKey
from dihya.reasons import FixedReasonError

# Longest first, so `x.cpython-311-x86_64-linux-gnu.so` is not taken for `x.cpython-311-…`
# + `.so`.
_SUFFIXES: Final = tuple(sorted(IMPORTABLE_SUFFIXES, key=len, reverse=True))
_INIT: Final = "__init__"
_NAMESPACE_LOADER: Final = getattr(importlib.machinery, "NamespaceLoader", None)
# Finders that do not depend on the import path: consulted even for an explicit path.
_PATH_INDEPENDENT: Final = (importlib.machinery.BuiltinImporter,
                            importlib.machinery.FrozenImporter)


@attrs.frozen
class Shadowing:
    """A module of the distribution that would not be imported from its own file."""

    module: str
    expected: tuple[str, ...]  # the listed files (relative POSIX paths); () for a namespace
    found: str  # what would be imported instead, or in addition: a path, or a finder
    message: str


def listed_modules(files: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Dotted module name -> the listed files that provide it (relative POSIX paths).

    Files whose name is not importable (a `-` in a directory, data files) are skipped.
    """
    modules: dict[str, list[str]] = {}
    for rel in files:
        if not rel.endswith(_SUFFIXES):  # most files of a distribution: one C-level test
            continue
        suffix = next(s for s in _SUFFIXES if rel.endswith(s))
        parts = rel[: -len(suffix)].split("/")
        if parts[-1] == _INIT:
            parts.pop()
        if parts and all(p.isidentifier() for p in parts):
            modules.setdefault(".".join(parts), []).append(rel)
    return {name: tuple(sorted(rels)) for name, rels in modules.items()}


def find_shadowing(site: Path, files: Sequence[str],
                   path: Sequence[str] | None = None) -> Shadowing | None:
    """The first listed module (shallowest first, then by name) that would be imported from
    another file than its own, or None.

    `site` is the directory the listed paths are relative to; `path` the import path
    (default: the real `sys.path`, with every `sys.meta_path` finder before `PathFinder`).
    Remembered while nothing it looked at changed (`dihya.gate.pathmemo`): the entries of
    each path entry that bear the name of one of its top-level modules, the directories
    it found them in, the finders.
    """
    if not pathmemo.enabled():
        pathmemo.note_unkeyed()
        return _find_shadowing(site, files, path, None)
    top = tuple(sys.path if path is None else path)
    real_path = path is None
    env = pathmemo.per_pass(("resolution-env", top, real_path),
                            lambda: _environment(top, real_path))
    site_str = os.fspath(site)
    files = tuple(files)
    key = (realpath(site_str), site_str, files, top, real_path)
    hit, value = pathmemo.recall("resolution", key)
    if (hit and _same_finders(value[0], env[0])
            and _entries_hold(value[1], value[2], env[1], value[4])):
        pathmemo.count("resolution", True)
        if real_path and value[3] is None:
            _note_direct(key, top, value[2], env[1], site_str)
        if value[1] != env[3]:
            # the entries that changed hold the same as before: from now on their keys
            # are enough, once settled (compared with when this build looked at them) and
            # holding no link (whether an entry is a link only changes with its directory)
            dirs = _trusted(env[3], value[2])
            if value[1] != dirs:
                pathmemo.replace("resolution", key, value,
                                 (*value[:1], dirs, *value[2:]))
        return value[3]  # type: ignore[no-any-return]
    pathmemo.count("resolution", False)
    # what each path entry holds of the top-level names, looked at before resolving
    names = frozenset(n.partition(".")[0].lower() for n in listed_modules(files))
    entries = tuple(_holding(d, names) for d, _k in env[1])
    started = time.time_ns()
    consulted: list[str | None] = [] if site_str in top else [site_str]
    found = _find_shadowing(site, files, path, consulted)
    if env[0][0] is None or None in consulted:
        return found
    if real_path and found is None:
        _note_direct(key, top, entries, env[1], site_str)
    outside = [d for d in dict.fromkeys(consulted) if d is not None and d not in env[2]]
    if not pathmemo.standard_dirs(outside):
        return found
    # a symbolic link's target can change without its directory changing: the links in
    # the directories consulted are keyed themselves
    checks = (*pathmemo.checks(outside),
              *(c for d in outside for c in pathmemo.link_checks(d)))
    held = [c for entry in entries for c in entry if c[1] is not None]
    if not pathmemo.settled([*checks, *held], started):
        return found
    # each entry's key when settled and it holds no link under the names (then an
    # unchanged key is enough); else its holding is compared (an absent entry: it is
    # still absent)
    dirs = _trusted(tuple(k if k is not None and pathmemo.settled([(d, k)], started)
                          else None for d, k in env[1]), entries)
    if env[3] == dirs:
        dirs = env[3]  # the same tuple: compared by identity first
    pathmemo.remember("resolution", key, checks, started,
                      (env[0], dirs, entries, found, names))
    return found


def _same_finders(remembered: Any, now: Any) -> bool:
    """`remembered == now` (the finders' kinds a resolution was remembered with, and this
    build's), compared once per build for each remembered object: the resolutions read
    from one cache file share one (`verifycache.shared_values`)."""
    if remembered is now:
        return True
    known: dict[tuple[int, int], tuple[Any, Any, bool]] = pathmemo.per_pass(
        _EQUAL_FINDERS, dict)
    hit = known.get((id(remembered), id(now)))
    if hit is not None and hit[0] is remembered and hit[1] is now:
        return hit[2]
    same: bool = remembered == now
    known[(id(remembered), id(now))] = (remembered, now, same)
    return same


_EQUAL_FINDERS: Final = ("resolution-equal-finders",)


def _note_direct(key: tuple[Any, ...], top: tuple[str, ...],
                 entries: tuple[tuple[pathmemo.Check, ...], ...],
                 dirs: tuple[pathmemo.Check, ...], site: str) -> None:
    """Note, for this build (`direct_entries`), the path entry `import` would find the
    distribution's top-level modules in: `site` itself when it is on `sys.path` as such and
    no entry before it holds anything bearing their names (those entries being absent
    counts as holding nothing). Only with the standard finders, nothing shadowing."""
    for entry, held, (directory, _key) in zip(top, entries, dirs, strict=True):
        if entry == site:
            if held:
                direct_entries()[key[1:3]] = entry
            return
        if held and held != ((directory, None),):
            return


_DIRECT: Final = ("resolution-direct",)


def direct_entries() -> dict[tuple[str, tuple[str, ...]], str]:
    """{(site, files): path entry} for the distributions whose resolution this build
    checked against the real `sys.path` and found unshadowed, with no entry before their
    site holding anything by their top-level names (empty outside a build): the loader
    asks that entry's own finder alone for such a module (`dihya.gate.loader`)."""
    table: dict[tuple[str, tuple[str, ...]], str] = pathmemo.per_pass(_DIRECT, dict)
    return table


def _encode_resolution(value: tuple[Any, ...]) -> tuple[Any, ...]:
    found: Shadowing | None = value[3]
    return (*value[:3], None if found is None else attrs.astuple(found), value[4])


def _decode_resolution(data: tuple[Any, ...]) -> tuple[Any, ...]:
    env, dirs, entries, found, names = data
    if not isinstance(names, frozenset) or len(dirs) != len(entries):
        raise ValueError("malformed")
    return (env, dirs, entries, None if found is None else Shadowing(
        found[0], tuple(found[1]), found[2], found[3]), names)


pathmemo.persist("resolution", _encode_resolution, _decode_resolution)


def _trusted(keys: tuple[StatKey | None, ...],
             entries: tuple[tuple[pathmemo.Check, ...], ...]) -> tuple[StatKey | None, ...]:
    """The settled keys of the path entries whose own key is enough: None for one that
    holds a symbolic link under the names (its target can change, or appear, without the
    path entry changing: what it holds is then compared at every build)."""
    if not any(os.path.islink(p) for held in entries for p, _k in held):
        return keys
    return tuple(None if any(os.path.islink(p) for p, _k in held) else k
                 for k, held in zip(keys, entries, strict=True))


def _environment(top: tuple[str, ...], real_path: bool) -> tuple[Any, ...]:
    """What resolution depends on besides the directories it lists, once per build: (the
    finders (None when one is not standard: nothing is then remembered) and the current
    directory when a path entry is relative), each path entry's (absolute path, key),
    the set of those paths, and each entry's key when settled (else None)."""
    state = _finder_environment(top, real_path)
    dirs = tuple((d, pathmemo.key_of(d))
                 for d in (os.path.abspath(e or pathmemo.cwd() or ".") for e in top))
    started = pathmemo.pass_started()
    settled = tuple(k if k is not None and pathmemo.settled([(d, k)], started) else None
                    for d, k in dirs)
    return state, dirs, frozenset(d for d, _k in dirs), settled


def environment(path: Sequence[str] | None = None) -> tuple[Any, ...]:
    """What module resolution compares besides the keys of what it looked at: the finders
    (by kind; None when one is not standard) and the current directory when a path entry is
    relative (`dihya.gate.replay` compares it before replaying a build)."""
    return _finder_environment(tuple(sys.path if path is None else path), path is None)


def _finder_environment(top: tuple[str, ...], real_path: bool) -> tuple[Any, ...]:
    relative = any(not os.path.isabs(e) for e in top)
    for entry in top:  # as a lookup does: each entry's finder, cached where `import` caches it
        with contextlib.suppress(Exception):  # a failing hook: then nothing is remembered
            _path_entry_finder(entry)
    return (pathmemo.finder_state(top, _meta_finders(real_path)),
            pathmemo.cwd() if relative else None)


def _holding(directory: str, names: frozenset[str]) -> tuple[pathmemo.Check, ...]:
    """The entries of `directory` a finder would look at for these top-level names (`x`,
    `x.py`, `x.<abi>.so`, ...: every entry whose name up to its first dot is one of them,
    compared without case), with their keys."""
    stems = pathmemo.per_pass(("stems", directory), lambda: _stems(directory))
    if stems is None:  # not a listable directory (absent, a file): its key decides
        return ((directory, pathmemo.key_of(directory)),)
    found = [e for n in names for e in stems.get(n, ())]
    return pathmemo.checks(os.path.join(directory, e) for e in sorted(found))


def _stems(directory: str) -> dict[str, list[str]] | None:
    try:
        listing = os.listdir(directory)
    except OSError:
        return None
    stems: dict[str, list[str]] = {}
    for entry in listing:
        stems.setdefault(entry.partition(".")[0].lower(), []).append(entry)
    return stems


def _entries_hold(recorded: tuple[StatKey | None, ...],
                  holding: tuple[tuple[pathmemo.Check, ...], ...],
                  now: tuple[pathmemo.Check, ...], names: frozenset[str]) -> bool:
    """True when every path entry is unchanged (its key, when it was settled) or still
    holds exactly the same entries bearing the module names, each unchanged."""
    for key, held, (directory, current) in zip(recorded, holding, now, strict=True):
        if key is not None and key == current:
            continue
        if current is None and held == ((directory, None),):
            continue  # absent then, absent now
        pathmemo.note_unkeyed()  # answered by a listing, not by the keys alone
        if _holding(directory, names) != held:
            return False
    return True


def _find_shadowing(site: Path, files: Iterable[str], path: Sequence[str] | None,
                    consulted: list[str | None] | None) -> Shadowing | None:
    """`find_shadowing`; the directories whose listing the answer depends on (beyond the
    path entries) are appended to `consulted`, and None when it cannot be remembered."""
    modules = listed_modules(files)
    if not modules:
        return None
    names = set(modules)
    for name in modules:  # the packages a module lives in must resolve too
        parts = name.split(".")
        names.update(".".join(parts[:i]) for i in range(1, len(parts)))
    root = realpath(os.fspath(site))
    top = list(sys.path if path is None else path)
    finders = _meta_finders(path is None)
    # package name -> where its submodules are searched; absent: not a package (or reported)
    locations: dict[str, list[str]] = {}
    for name in sorted(names, key=lambda n: (n.count("."), n)):
        parent = name.rpartition(".")[0]
        if parent and parent not in locations:
            continue  # the parent is a plain module: this file is not importable as `name`
        listed = modules.get(name)
        try:
            spec, portions = _find(name, locations[parent] if parent else top, finders,
                                   top_level=not parent, seen=consulted)
        except FinderFailed as exc:
            if consulted is not None:
                consulted.append(None)
            return Shadowing(name, listed or (), str(exc),
                             f"looking up module {name!r} as `import` would, {exc}; the "
                             "plugin's own file cannot be shown to be what runs")
        problem = (_namespace_problem(name, spec) if listed is None
                   else _module_problem(name, listed, spec, root))
        if consulted is not None and spec is not None:
            _consulted(spec, consulted)
        if problem is not None:
            return problem
        if spec is None:
            locations[name] = portions
            if consulted is not None:
                consulted.extend(portions)
        elif spec.submodule_search_locations is not None:
            locations[name] = list(spec.submodule_search_locations)
    return None


def _consulted(spec: ModuleSpec, consulted: list[str | None]) -> None:
    """The directories a found module's answer depends on: its file's directory and its
    search locations; None (do not remember) when its file is a link."""
    if spec.has_location and spec.origin:
        if os.path.islink(spec.origin):
            consulted.append(None)
        consulted.append(os.path.dirname(spec.origin))
    consulted.extend(spec.submodule_search_locations or ())


def _meta_finders(real_path: bool) -> list[Any]:
    before = itertools.takewhile(lambda f: f is not importlib.machinery.PathFinder,
                                 sys.meta_path)
    if real_path:
        return list(before)
    return [f for f in before if f in _PATH_INDEPENDENT]


def _find(name: str, where: Sequence[str], finders: Sequence[Any], top_level: bool,
          seen: list[str | None] | None = None) -> tuple[ModuleSpec | None, list[str]]:
    """What `import name` would find: (a spec with a loader, []) or (None, namespace
    portions in order). A meta-path finder's namespace spec counts as portions. Every
    portion looked at is appended to `seen` (adding an `__init__` there changes the
    answer)."""
    for finder in finders:
        find_spec = getattr(finder, "find_spec", None)
        if find_spec is None:
            continue
        spec = _ask(finder, find_spec, name, None if top_level else list(where))
        if spec is not None:
            if _is_namespace(spec):
                return None, list(spec.submodule_search_locations or ())
            return spec, []
    portions: list[str] = []
    for entry in where:
        finder = _path_entry_finder(entry)
        find_spec = getattr(finder, "find_spec", None)
        if find_spec is None:
            continue
        spec = _ask(finder, find_spec, name)
        if spec is None:
            continue
        if not _is_namespace(spec):
            return spec, []
        portions.extend(spec.submodule_search_locations or ())
        if seen is not None:
            seen.extend(spec.submodule_search_locations or ())
    return None, portions


class FinderFailed(FixedReasonError):
    """A finder raised while looking a module up: `import` would fail the same way."""

    REASON = "finder-failed"


def _ask(finder: Any, find_spec: Any, *args: Any) -> ModuleSpec | None:
    try:
        spec: ModuleSpec | None = find_spec(*args)
    except Exception as exc:
        raise FinderFailed(f"{finder!r} raised {type(exc).__name__}: {exc}") from exc
    return spec


def _path_entry_finder(entry: object) -> Any:
    """The finder of one path entry, from the cache `import` uses (as `PathFinder` does)."""
    if not isinstance(entry, str):
        return None
    if entry == "":  # the current directory, as PathFinder reads it
        try:
            entry = os.getcwd()
        except OSError:
            return None
    try:
        return sys.path_importer_cache[entry]
    except KeyError:
        pass
    finder = pkgutil.get_importer(entry)  # tries sys.path_hooks, caches a finder it finds
    if finder is None:
        sys.path_importer_cache[entry] = None  # no finder: as PathFinder remembers it
    return finder


def _is_namespace(spec: ModuleSpec) -> bool:
    loader = spec.loader
    return loader is None or (_NAMESPACE_LOADER is not None
                              and isinstance(loader, _NAMESPACE_LOADER))


def _namespace_problem(name: str, spec: ModuleSpec | None) -> Shadowing | None:
    """`name` is a namespace package of the distribution: nothing may make it a module."""
    if spec is None:
        return None
    found = _describe(spec)
    return Shadowing(name, (), found,
                     f"{name!r} is a namespace package the plugin's modules live in, but "
                     f"{found} turns it into a regular package or module whose code would "
                     "run when the plugin is imported; remove that file (and find out who "
                     "wrote it)")


def _module_problem(name: str, listed: tuple[str, ...], spec: ModuleSpec | None,
                    root: str) -> Shadowing | None:
    if spec is None:
        return None  # nothing at all would be imported: an ImportError, no foreign code
    origin = spec.origin if spec.has_location else None
    real = realpath_of_file(origin) if origin is not None else None
    if real is not None and _relative(real, root) in listed:
        return None
    found = _describe(spec)
    if real is not None and real != origin:
        found += f" (a link to {real})"
    own = " or ".join(listed)
    return Shadowing(name, listed, found,
                     f"module {name!r} would be imported from {found}, not from the "
                     f"plugin's own {own}; remove that file or the path entry that holds it "
                     "(PYTHONPATH, the current directory, another site directory)")


def _describe(spec: ModuleSpec) -> str:
    if spec.has_location and spec.origin:
        return spec.origin
    if spec.origin in ("built-in", "frozen"):
        return f"the interpreter's {spec.origin} module {spec.name!r}"
    loader = spec.loader
    kind = getattr(loader, "__name__", None) or type(loader).__name__
    return f"{spec.origin or spec.name!r} (loaded by {kind})"


def _relative(real: str, root: str) -> str | None:
    """The real path `real` relative to the real directory `root`, POSIX; None if outside."""
    if os.sep != "/":
        try:
            return Path(real).relative_to(root).as_posix()
        except ValueError:
            return None
    if root == "/":
        return real[1:] if real.startswith("/") else None
    return real[len(root) + 1:] if real.startswith(root + "/") else None
