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

import importlib.machinery
import itertools
import os
import pkgutil
import sys
from collections.abc import Iterable, Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import Any, Final

import attrs

from dihya.gate.fingerprint import IMPORTABLE_SUFFIXES, realpath, realpath_of_file
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


def find_shadowing(site: Path, files: Iterable[str],
                   path: Sequence[str] | None = None) -> Shadowing | None:
    """The first listed module (shallowest first, then by name) that would be imported from
    another file than its own, or None.

    `site` is the directory the listed paths are relative to; `path` the import path
    (default: the real `sys.path`, with every `sys.meta_path` finder before `PathFinder`).
    """
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
                                   top_level=not parent)
        except FinderFailed as exc:
            return Shadowing(name, listed or (), str(exc),
                             f"looking up module {name!r} as `import` would, {exc}; the "
                             "plugin's own file cannot be shown to be what runs")
        problem = (_namespace_problem(name, spec) if listed is None
                   else _module_problem(name, listed, spec, root))
        if problem is not None:
            return problem
        if spec is None:
            locations[name] = portions
        elif spec.submodule_search_locations is not None:
            locations[name] = list(spec.submodule_search_locations)
    return None


def _meta_finders(real_path: bool) -> list[Any]:
    before = itertools.takewhile(lambda f: f is not importlib.machinery.PathFinder,
                                 sys.meta_path)
    if real_path:
        return list(before)
    return [f for f in before if f in _PATH_INDEPENDENT]


def _find(name: str, where: Sequence[str], finders: Sequence[Any],
          top_level: bool) -> tuple[ModuleSpec | None, list[str]]:
    """What `import name` would find: (a spec with a loader, []) or (None, namespace
    portions in order). A meta-path finder's namespace spec counts as portions."""
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
