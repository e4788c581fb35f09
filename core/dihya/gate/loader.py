"""Load the plugins that passed the gate, with stevedore, and validate their classes.

The manager's `list_entry_points()` returns exactly the verified entry points, so stevedore
imports nothing else and consults none of its caches. Bytecode is read from and written to
a private directory (`sys.pycache_prefix`), so a forged `__pycache__/*.pyc` beside a verified
source is never used. `forget_modules` drops an upgraded or removed plugin's modules (and
their cached bytecode) so that the next load imports the verified files afresh.
"""

from __future__ import annotations

import _imp
import contextlib
import importlib.machinery
import importlib.metadata as md
import importlib.util
import itertools
import os
import stat
import sys
import tempfile
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
from stevedore import NamedExtensionManager
from stevedore.extension import Extension

from dihya.gate import pathmemo
from dihya.plugin import (
    ActionSpec,
    GenerationPluginBase,
    InvalidPluginError,
    loading_facts,
)
from dihya.pluginlog import loading
from dihya.reasons import Reason


@attrs.frozen
class Loaded:
    """A plugin class that loaded and validated, and its instance."""

    name: str
    cls: type[GenerationPluginBase]
    instance: GenerationPluginBase
    hooks: tuple[str, ...]
    actions: dict[str, ActionSpec] = attrs.field(factory=dict)
    # the arguments each implemented hook takes (it is called with those, by keyword)
    hook_args: dict[str, tuple[str, ...]] = attrs.field(factory=dict)
    deprecations: tuple[str, ...] = ()
    # the state of the class dicts when this load validated the class (`_class_state`), as
    # remembered with its facts; None when the class could not be remembered
    state: tuple[Any, ...] | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen
class LoadFailure:
    name: str
    reason: str  # import-error | invalid-plugin
    message: str


class _Names(list[str]):
    """The names a manager loads: a list (what stevedore takes) whose membership test,
    asked once per entry point, is a set's (a list's made one manager for N plugins
    quadratic)."""

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__(names)
        self._set = frozenset(names)

    def __contains__(self, name: object) -> bool:
        return name in self._set


class _VerifiedExtensionManager(NamedExtensionManager):  # type: ignore[type-arg]
    """A NamedExtensionManager that sees only the entry points it is given (through the
    public `list_entry_points`), so it imports nothing else and consults no cache.

    One manager loads every verified entry point of a build (a manager per plugin cost more
    than stevedore's own listing at N = 1000); each is loaded inside its own `loading`
    context, and whatever its import raises is its own failure: stevedore lets
    AssertionError (and any BaseException) through its loop, which would stop the others
    from loading, so `_load_one_plugin` catches it first."""

    def __init__(self, group: str, entry_points: Sequence[md.EntryPoint],
                 failures: dict[str, BaseException]) -> None:
        self._verified = list(entry_points)
        self._failures = failures

        def on_failure(_manager: Any, ep: md.EntryPoint, err: BaseException) -> None:
            failures[ep.name] = err

        super().__init__(
            group,
            names=_Names([ep.name for ep in self._verified]),
            invoke_on_load=False,
            on_load_failure_callback=on_failure,
            on_missing_entrypoints_callback=None,
        )

    def list_entry_points(self) -> list[md.EntryPoint]:
        return self._verified

    def _load_one_plugin(self, ep: md.EntryPoint, *args: Any, **kwargs: Any) -> Any:
        try:
            with loading(ep.name):  # what it logs at import is its own, for its first call
                return super()._load_one_plugin(ep, *args, **kwargs)
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            self._failures[ep.name] = (RuntimeError(f"{type(exc).__name__}: {exc}")
                                       if isinstance(exc, AssertionError) else exc)
        except BaseException as exc:  # a plugin's import: any failure is its own
            self._failures[ep.name] = RuntimeError(f"{type(exc).__name__}: {exc}")
        return None


def _load_all(group: str, entry_points: Sequence[md.EntryPoint],
              failures: dict[str, BaseException]) -> dict[str, Any]:
    """The extensions of verified entry points, by name, loaded by one manager."""
    if not entry_points:
        return {}
    try:
        manager = _VerifiedExtensionManager(group, entry_points, failures)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # not a plugin's import (those are caught per plugin)
        for ep in entry_points:
            failures.setdefault(ep.name, RuntimeError(f"{type(exc).__name__}: {exc}"))
        return {}
    return {ext.name: ext for ext in manager.extensions}


def _load_imported(ep: md.EntryPoint, failures: dict[str, BaseException]) -> list[Any]:
    """The extension of a verified entry point whose module a previous build imported
    (still in `sys.modules`: `forget_modules` drops a changed plugin's), without a stevedore
    manager per plugin: what stevedore's `Extension` holds, with its failures handled as
    `_load_one` handles them. [] when the module is not imported yet (stevedore loads it)."""
    if ep.module not in sys.modules:
        return []
    try:
        with loading(ep.name):
            plugin = ep.load()  # the module from `sys.modules`, then its attribute
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        if isinstance(exc, AssertionError):  # stevedore lets it through: as `_load_one`
            failures[ep.name] = RuntimeError(f"{type(exc).__name__}: {exc}")
        else:
            failures[ep.name] = exc
        return [None]
    except BaseException as exc:
        failures[ep.name] = RuntimeError(f"{type(exc).__name__}: {exc}")
        return [None]
    return [Extension(ep.name, ep, plugin, None)]


# (the path entry the gate found a top-level module in, the one source file the plugin's
# distribution lists for it — `NAME/__init__.py` or `NAME.py` — or None)
DirectModule = tuple[str, str | None]


def direct_source(top: str, files: Iterable[str]) -> str | None:
    """`top/__init__.py` or `top.py` when it is the only importable file (any suffix the
    import system loads) among `files` (a distribution's verified files) that provides the
    top-level module `top`; else None."""
    package, module = top + "/__init__.", top + "."
    own = [f for f in files if (f.startswith(package) or (f.startswith(module)
                                                        and "/" not in f))
           and f.endswith(_IMPORTABLE)]
    if len(own) == 1 and own[0] in (package + "py", module + "py"):
        return own[0]
    return None


_IMPORTABLE: Final = tuple(importlib.machinery.all_suffixes())


def _path_join(*parts: str) -> str:
    """How the import system joins a finder's directory and a name on POSIX
    (`importlib._bootstrap_external._path_join`): empty parts dropped, trailing slashes
    stripped."""
    return "/".join([part.rstrip("/") for part in parts if part])


class _DirectFinder:
    """A `sys.meta_path` finder, first while a build loads its plugins, that answers for
    the top-level modules the gate resolved (`direct`: name -> (path entry, source file))
    what `import` would find: that path entry's own finder's spec (a `FileFinder` of the
    exact entry string, as `PathFinder` caches it) — the same spec, loader, `__file__` and
    `__path__`, without asking every earlier path entry and `sys.meta_path` finder, which
    the gate found to hold nothing by that name. When the plugin's distribution lists one
    source file for the name (`direct_source`), the spec is made as that finder makes it
    for that file (`_spec_of`), without its `stat` calls: the gate checked in this build
    (or the replay of the last build did: `dihya.gate.replay`) that the file and its
    directory are those it verified (keys unchanged), and
    verification found no other importable file there by that name. Everything else (a
    dotted name, a module not in `direct`, a namespace portion, a spec not found or found
    elsewhere) is left to the finders after it: the normal import. The import itself
    (lock, `sys.modules`, parent packages, loading) is `import`'s own."""

    def __init__(self, direct: Mapping[str, DirectModule]) -> None:
        self._direct = direct

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if path is not None:
            return None
        found = self._direct.get(name)
        if found is None or found[0] not in sys.path:
            return None
        finder = sys.path_importer_cache.get(found[0])
        if type(finder) is not importlib.machinery.FileFinder:
            return None
        if found[1] is not None:
            spec = _spec_of(finder, name, found[1])
            if spec is not None:
                return spec
        spec = finder.find_spec(name, target)
        if spec is None or spec.loader is None:
            return None  # gone, or a namespace portion: `PathFinder` gathers them all
        return spec


def _spec_of(finder: importlib.machinery.FileFinder, name: str, source: str) -> Any:
    """The spec `finder.find_spec(name)` gives when `source` (`NAME/__init__.py` or
    `NAME.py`, relative to the finder's directory) is the file it finds: the loader its
    `.py` suffix maps to, `__path__` the package directory. None when that loader is not
    the standard `SourceFileLoader` (then the finder itself is asked)."""
    if os.sep != "/" or os.altsep:
        return None  # the joins below are POSIX's
    loaders = getattr(finder, "_loaders", None)
    loader_class = next((loader for suffix, loader in loaders or () if suffix == ".py"),
                        None)
    if loader_class is not importlib.machinery.SourceFileLoader:
        return None
    base = finder.path  # the finder's directory, as it joins the names it finds
    if source.endswith("/__init__.py"):
        package = _path_join(base, name)
        origin = _path_join(package, "__init__.py")
        locations: list[str] | None = [package]
    else:
        origin, locations = _path_join(base, name + ".py"), None
    return importlib.util.spec_from_file_location(
        name, origin, loader=loader_class(name, origin),
        submodule_search_locations=locations)


@contextlib.contextmanager
def _direct_finder(direct: Mapping[str, DirectModule] | None) -> Iterator[None]:
    """`_DirectFinder` first on `sys.meta_path` while the block runs, when every finder
    before `PathFinder` is a standard one (`pathmemo.finder_state`'s: built-in, frozen,
    setuptools' distutils shim) and answers for none of the names; else nothing."""
    before = list(itertools.takewhile(lambda f: f is not importlib.machinery.PathFinder,
                                      sys.meta_path))
    if (not direct or len(before) == len(sys.meta_path)
            or not all(pathmemo.standard_meta(f) for f in before)):
        yield
        return
    # the names a finder before `PathFinder` answers for: left to the normal import
    shimmed = {a[len("spec_for_"):] for f in before if not isinstance(f, type)
               for a in dir(f) if a.startswith("spec_for_")}
    usable = {name: entry for name, entry in direct.items()
              if name not in shimmed and not (_imp.is_builtin(name) or _imp.is_frozen(name))}
    if not usable:
        yield
        return
    finder = _DirectFinder(usable)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(finder)


def user_cache_path(name: str) -> Path:
    """`$XDG_CACHE_HOME/dihya/NAME-UID` (default `~/.cache`): this user's cache `name`."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dihya" / f"{name}-{os.getuid()}"


def owned_dir(path: Path, mode: int, forbidden: int) -> bool:
    """Create `path` (with `mode`) if needed; True if it is a directory, not a link, owned
    by this user, with none of the `forbidden` permission bits."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=mode)
        st = path.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & forbidden


def private_pycache_dir() -> Path:
    """A directory only this user can write, for the bytecode of plugin modules."""
    path = user_cache_path("pycache")
    if not owned_dir(path, 0o700, 0o077):
        path = Path(tempfile.mkdtemp(prefix="dihya-pycache-"))
    return path


def redirect_bytecode() -> None:
    """Point this process's bytecode cache at a private directory (idempotent)."""
    if not sys.pycache_prefix:
        sys.pycache_prefix = str(private_pycache_dir())


_CODE_SUFFIXES: Final = (".py", ".pyc", ".so", ".pyd")


def forget_modules(site: Path, files: Iterable[str]) -> list[str]:
    """Remove from `sys.modules` every module loaded from one of `files` (paths relative to
    the site directory `site`), and delete their cached bytecode; returns their names.

    Objects already holding the old modules (a generation still running on an older
    snapshot) keep them; the next import of these names reads the files again.
    """
    root = os.path.realpath(site)
    wanted = {os.path.join(root, os.path.normpath(f)) for f in files
              if f.endswith(_CODE_SUFFIXES)}
    if not wanted:
        return []
    names = {os.path.basename(w) for w in wanted}
    dropped = []
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if not isinstance(file, str) or os.path.basename(file) not in names:
            continue
        if os.path.realpath(file) not in wanted:
            continue
        del sys.modules[name]
        dropped.append(name)
        if file.endswith(".py"):
            with contextlib.suppress(OSError, ValueError, NotImplementedError):
                os.unlink(importlib.util.cache_from_source(file))
    return sorted(dropped)


def load_plugins(group: str, entry_points: Sequence[md.EntryPoint],
                 direct: Mapping[str, DirectModule] | None = None) -> tuple[
        dict[str, Loaded], dict[str, LoadFailure]]:
    """Import and validate the given (verified) entry points; nothing else is imported.

    `direct`: {top-level module: (the `sys.path` entry the gate found it in, with nothing
    before it bearing its name (`resolution.direct_entries`), its one source file or None
    (`direct_source`))}: while loading, such a module is looked up in that entry alone
    (`_DirectFinder`), not in every path entry."""
    redirect_bytecode()
    errors: dict[str, BaseException] = {}
    imported = {ep.name: _load_imported(ep, errors) for ep in entry_points}
    pending = [ep for ep in entry_points if not imported[ep.name]]
    with _direct_finder(direct if pending else None):
        fresh = _load_all(group, pending, errors)
    extensions = [ext for ep in entry_points
                  for ext in (imported[ep.name] or [fresh.get(ep.name)])]
    loaded: dict[str, Loaded] = {}
    failed: dict[str, LoadFailure] = {
        name: LoadFailure(name, Reason.IMPORT_ERROR, f"importing the plugin raised "
                          f"{type(err).__name__}: {err}")
        for name, err in errors.items()
    }
    for ext in extensions:
        if ext is None:
            continue  # failed to load: in `errors`
        where = f"entry point {ext.name!r} ({ext.entry_point.value})"
        try:
            cls, facts, state = _validated(ext.plugin, where)
            with loading(ext.name):
                instance = cls()
            with contextlib.suppress(AttributeError):  # `self.logger` names the entry point
                instance._dihya_entry_point = ext.name  # type: ignore[attr-defined]
        except InvalidPluginError as exc:
            failed[ext.name] = LoadFailure(ext.name, Reason.INVALID_PLUGIN, str(exc))
            continue
        except Exception as exc:
            failed[ext.name] = LoadFailure(ext.name, Reason.INVALID_PLUGIN,
                                           f"{where}: creating the plugin raised "
                                           f"{type(exc).__name__}: {exc}")
            continue
        loaded[ext.name] = Loaded(ext.name, cls, instance, *facts, state)
    return loaded, failed


@attrs.frozen(eq=False)
class Imported:
    """Where a build found a loaded plugin's class, to tell whether loading it again would
    give the same (`still_loaded`)."""

    module_name: str
    module: Any  # the module object in `sys.modules` then
    path: tuple[str, ...]  # the attribute path from the module to the class
    state: tuple[Any, ...]  # the class's state when it was validated (`_class_state`)


def imported_as(ep: md.EntryPoint, loaded: Loaded) -> Imported | None:
    """Where `ep` was loaded from, read once after a build loaded it (`still_loaded`); None
    when its module is not imported or its class was not remembered as validated. The
    state is the one its load validated (`Loaded.state`, not looked up again); the module
    and attribute are read from one match of the entry point's own pattern (what its
    `module` and `attr` properties each match again)."""
    state = loaded.state
    match = ep.pattern.match(ep.value)
    name, attr = (match.group("module"), match.group("attr")) if match is not None \
        else (ep.module, ep.attr)
    module = sys.modules.get(name)
    if module is None or state is None:
        return None
    return Imported(name, module, tuple(filter(None, (attr or "").split("."))), state)


def still_loaded(imported: Imported, cls: type) -> bool:
    """True when loading the entry point again would give the class `cls` as validated
    (and a new instance): its module is still the one imported (`sys.modules`:
    `forget_modules` drops a changed plugin's), its attribute still `cls`, and the class's
    dicts unchanged since its validation (what `_validated` compares)."""
    module = imported.module
    if sys.modules.get(imported.module_name) is not module:
        return False
    obj: Any = module
    try:
        for name in imported.path:
            obj = getattr(obj, name)
    except Exception:
        return False
    return obj is cls and _class_state(cls) == imported.state


_Facts = tuple[tuple[str, ...], dict[str, ActionSpec], dict[str, tuple[str, ...]],
               tuple[str, ...]]
# A class already validated (a rebuild finds the same class object in `sys.modules`): its
# facts, with the state of its class dicts then. Any attribute set, added or removed since
# (on the class or a base) gives another state, and the class is validated again.
_VALIDATED: weakref.WeakKeyDictionary[type, tuple[tuple[Any, ...], _Facts]] = (
    weakref.WeakKeyDictionary())


def _class_state(cls: type) -> tuple[Any, ...]:
    # ids, not the objects: holding a method would hold the class (its `__class__` cell).
    # In-process plugin code already runs with the backend's rights: this check is the
    # contract's (author mistakes), not a security boundary.
    # (names, ids, types) per class: each made by one C-level call, not a tuple per name
    return tuple((id(klass), tuple(attrs_), tuple(map(id, attrs_.values())),
                  tuple(map(type, attrs_.values())))
                 for klass in cls.__mro__ if klass not in _CORE_CLASSES
                 for attrs_ in (vars(klass),))


_CORE_CLASSES: Final = (object, GenerationPluginBase)


def _validated(obj: object, where: str) -> tuple[type[GenerationPluginBase], _Facts,
                                               tuple[Any, ...] | None]:
    """`validate_plugin_class` and what the registry reads of the class (hooks, actions,
    hook arguments, deprecations); remembered per class while its dicts are unchanged.
    Also the state remembered with them (None: the class could not be remembered)."""
    if isinstance(obj, type):
        try:
            hit = _VALIDATED.get(obj)
        except TypeError:
            hit = None
        # the state only when there is one to compare with (a fresh process has none)
        if hit is not None and hit[0] == _class_state(obj):
            return obj, hit[1], hit[0]
    # each hook's method, its parameters and the action markers looked up once for all
    cls, hooks, actions, hook_args, deprecations = loading_facts(obj, where)
    facts: _Facts = (hooks, actions, hook_args, tuple(deprecations))
    state = _class_state(cls)
    try:
        _VALIDATED[cls] = (state, facts)
    except TypeError:
        return cls, facts, None
    return cls, facts, state
