"""Loading a plugin asks the path entry the gate resolved it in, and nothing before it.

While a build loads its in-process plugins, a finder placed first on `sys.meta_path`
(`dihya.gate.loader._DirectFinder`) answers for each entry point's top-level module with the
spec of the path entry the gate found it in (`resolution.direct_entries`), instead of asking
every path entry in turn. What is imported must be exactly what `import` gives: the same
spec, `__file__` and `__path__`, submodules and relative imports through the package's
`__path__`, a dotted entry point through its parent package; and a file planted in an
earlier path entry between the gate and the import is not what runs (the gate's answer is).
Real wheels pip-installed into a private site directory behind an earlier (empty) path
entry, the real `sys.path` and the standard finders, the verification cache on.
"""

from __future__ import annotations

import importlib.machinery
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dihya.registry as registry
from dihya.gate import loader, pathmemo, verifycache
from dihya.registry import build_registry
from support.site import PluginSite
from support.wheels import build_wheel, pip_install, plugin_source

RELATIVE_SOURCE = '''\
"""A plugin package importing its submodules relatively."""
from dihya import GenerationPluginBase

from .helpers.util import VALUE
from . import helpers


class Plugin(GenerationPluginBase):
    name = {name!r}
    description = "a package with submodules"
    version = "1.0.0"
    author = "tests"
    safe = True
    value = VALUE + helpers.OTHER
'''


class Site:
    def __init__(self, site: PluginSite, early: Path) -> None:
        self.site, self.early = site, early

    def build(self, *names: str) -> registry.RegistrySnapshot:
        return build_registry(self.site.config(*(self.site.entry(n) for n in names)))


@pytest.fixture
def direct(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    site = PluginSite(tmp_path)
    early = tmp_path / "early"
    early.mkdir()
    monkeypatch.setenv(verifycache.ENV, str(tmp_path / "cache" / "verified.json"))
    monkeypatch.syspath_prepend(str(site.site))
    monkeypatch.syspath_prepend(str(early))  # before the site: searched first by `import`
    # the import system of a server or a `dihya` command: without pytest's assertion
    # rewriting finder (with any finder that is not a standard one, nothing is remembered
    # and every plugin is imported by the normal search)
    monkeypatch.setattr(sys, "meta_path", [f for f in sys.meta_path
                                           if pathmemo.standard_meta(f)
                                           or f is importlib.machinery.PathFinder])
    verifycache.reset()
    pathmemo.clear()
    before = set(sys.modules)
    yield Site(site, early)
    for name in set(sys.modules) - before:
        if name.startswith("dihya_plugin_"):
            del sys.modules[name]
    verifycache.reset()
    pathmemo.clear()


def _as_import_finds(name: str, module: Any) -> None:
    """`module` was loaded from the spec `import` finds for `name` on the real path."""
    expected = importlib.machinery.PathFinder.find_spec(name)
    assert expected is not None
    spec = module.__spec__
    assert spec.name == expected.name == name
    assert spec.origin == expected.origin == module.__file__
    assert type(spec.loader) is type(expected.loader)
    assert spec.loader.path == expected.loader.path  # type: ignore[attr-defined]
    assert spec.submodule_search_locations == expected.submodule_search_locations
    assert getattr(module, "__path__", None) == expected.submodule_search_locations
    assert spec.cached == expected.cached == module.__cached__
    assert spec.parent == expected.parent


def _no_finder_left() -> None:
    assert not any(type(f).__name__ == "_DirectFinder" for f in sys.meta_path)


def test_a_package_with_submodules_and_relative_imports(direct: Site) -> None:
    name = direct.site.unique("rel")
    module = f"dihya_plugin_{name}"
    direct.site.install(name, source=RELATIVE_SOURCE.format(name=name), extra_files={
        f"{module}/helpers/__init__.py": "OTHER = 2\n",
        f"{module}/helpers/util.py": "from . import OTHER\nVALUE = 40 + OTHER - 2\n",
    })
    snapshot = direct.build(name)
    record = snapshot.get(name)
    assert record.status == "active", record.message
    assert type(record.instance).value == 42
    _as_import_finds(module, sys.modules[module])
    helpers = sys.modules[f"{module}.helpers"]
    assert helpers.__file__ == str(direct.site.site / module / "helpers" / "__init__.py")
    assert sys.modules[f"{module}.helpers.util"].__spec__.parent == f"{module}.helpers"
    _no_finder_left()


def test_a_dotted_entry_point_module(direct: Site) -> None:
    name = direct.site.unique("dot")
    module = f"dihya_plugin_{name}"
    wheel = build_wheel(direct.site.wheels, f"dihya-plugin-{name}", "1.0.0", {
        f"{module}/__init__.py": "PARENT = True\n",
        f"{module}/impl.py": plugin_source(name),
    }, {name: f"{module}.impl:Plugin"})
    pip_install(sys.executable, str(wheel), target=direct.site.site)
    snapshot = direct.build(name)
    record = snapshot.get(name)
    assert record.status == "active", record.message
    assert sys.modules[module].PARENT is True
    _as_import_finds(module, sys.modules[module])
    impl = sys.modules[f"{module}.impl"]
    assert impl.__file__ == str(direct.site.site / module / "impl.py")
    assert type(record.instance).__module__ == f"{module}.impl"
    _no_finder_left()


def test_a_namespace_package_entry_point_is_imported_as_usual(direct: Site) -> None:
    name = direct.site.unique("ns")
    module = f"dihya_plugin_{name}"
    wheel = build_wheel(direct.site.wheels, f"dihya-plugin-{name}", "1.0.0", {
        f"{module}/impl.py": plugin_source(name),
    }, {name: f"{module}.impl:Plugin"})
    pip_install(sys.executable, str(wheel), target=direct.site.site)
    record = direct.build(name).get(name)
    assert record.status == "active", record.message
    assert sys.modules[module].__spec__.origin is None  # a namespace package, as `import` makes
    assert list(sys.modules[module].__path__) == [str(direct.site.site / module)]
    _no_finder_left()


def test_a_module_planted_in_an_earlier_path_entry_after_the_gate_does_not_run(
        direct: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between the gate's resolution and the import, a file of the plugin's name appears in
    a path entry searched before the plugin's: `import` would run it; the plugin's own,
    verified file is what loads. The next build sees it and refuses the plugin."""
    name = direct.site.unique("shadow")
    module = f"dihya_plugin_{name}"
    direct.site.install(name)
    shadow = direct.early / f"{module}.py"
    load = registry.load_plugins

    def plant_then_load(*args: Any, **kwargs: Any) -> Any:
        shadow.write_text("raise SystemExit('the planted module ran')\n")
        importlib.invalidate_caches()
        return load(*args, **kwargs)

    entry = direct.site.entry(name)
    monkeypatch.setattr(registry, "load_plugins", plant_then_load)
    record = build_registry(direct.site.config(entry)).get(name)
    monkeypatch.setattr(registry, "load_plugins", load)
    assert record.status == "active", record.message
    assert sys.modules[module].__file__ == str(direct.site.site / module / "__init__.py")
    found = importlib.machinery.PathFinder.find_spec(module)
    assert found is not None and found.origin == str(shadow)  # what `import` would have run
    _no_finder_left()
    del sys.modules[module]
    again = build_registry(direct.site.config(entry)).get(name)
    assert (again.status, again.reason) == ("refused", "shadowed-module")


def test_with_another_finder_first_the_normal_import_runs(
        direct: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """A finder that is not a standard one before `PathFinder` (an import hook): it may
    answer for anything, so the plugin is looked up by the normal search (through it)."""
    name = direct.site.unique("hook")
    module = f"dihya_plugin_{name}"
    direct.site.install(name)
    asked: list[str] = []

    class Watching:
        def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
            asked.append(fullname)

    monkeypatch.setattr(sys, "meta_path", [Watching(), *sys.meta_path])
    record = direct.build(name).get(name)
    assert record.status == "active", record.message
    assert module in asked
    _as_import_finds(module, sys.modules[module])
    _no_finder_left()


def test_a_plugin_whose_import_fails_leaves_no_finder(direct: Site) -> None:
    name = direct.site.unique("fails")
    direct.site.install(name, source="raise RuntimeError('broken on import')\n")
    record = direct.build(name).get(name)
    assert record.status == "failed"
    assert "broken on import" in record.message
    _no_finder_left()


class _Made:
    """Counts the specs `_DirectFinder` made itself (`loader._spec_of`), by module name."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.names: list[str] = []
        made = loader._spec_of

        def counting(finder: Any, name: str, source: str) -> Any:
            spec = made(finder, name, source)
            if spec is not None:
                self.names.append(name)
            return spec

        monkeypatch.setattr(loader, "_spec_of", counting)


def test_a_top_level_module_spec_is_made_as_the_finder_makes_it(
        direct: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plugin that is one module (`NAME.py`): the spec made without the finder's `stat`
    calls is the one `import` finds (origin, loader, no `__path__`, cached bytecode)."""
    made = _Made(monkeypatch)
    name = direct.site.unique("mod")
    module = f"dihya_plugin_{name}"
    wheel = build_wheel(direct.site.wheels, f"dihya-plugin-{name}", "1.0.0", {
        f"{module}.py": plugin_source(name)}, {name: f"{module}:Plugin"})
    pip_install(sys.executable, str(wheel), target=direct.site.site)
    record = direct.build(name).get(name)
    assert record.status == "active", record.message
    assert made.names == [module]
    _as_import_finds(module, sys.modules[module])
    _no_finder_left()


def test_a_package_spec_is_made_as_the_finder_makes_it(
        direct: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    made = _Made(monkeypatch)
    name = direct.site.unique("pkg")
    module = f"dihya_plugin_{name}"
    direct.site.install(name)
    record = direct.build(name).get(name)
    assert record.status == "active", record.message
    assert made.names == [module]
    _as_import_finds(module, sys.modules[module])


@pytest.mark.parametrize("layout", ["package", "module"])
def test_an_extension_listed_beside_the_source_is_what_import_finds(
        direct: Site, monkeypatch: pytest.MonkeyPatch, layout: str) -> None:
    """The distribution lists an extension module of the same name beside the source: the
    finder prefers the extension, so the spec is not made from the source; the import runs
    what `import` would (here a file that is no shared object: the import fails), exactly
    as with the verification cache off, where no direct lookup is made."""
    made = _Made(monkeypatch)
    name = direct.site.unique("ext")
    module = f"dihya_plugin_{name}"
    stem = f"{module}/__init__" if layout == "package" else module
    wheel = build_wheel(direct.site.wheels, f"dihya-plugin-{name}", "1.0.0", {
        f"{stem}.py": plugin_source(name), f"{stem}.abi3.so": b"not a shared object\n",
    }, {name: f"{module}:Plugin"})
    pip_install(sys.executable, str(wheel), target=direct.site.site)
    found = importlib.machinery.PathFinder.find_spec(module)
    assert found is not None and str(found.origin).endswith(".abi3.so")
    record = direct.build(name).get(name)
    assert (record.status, record.reason) == ("failed", "import-error"), record.message
    assert made.names == []
    assert module not in sys.modules
    monkeypatch.setenv(verifycache.ENV, "off")
    off = direct.build(name).get(name)
    assert (off.status, off.reason) == ("failed", "import-error")
    _no_finder_left()
