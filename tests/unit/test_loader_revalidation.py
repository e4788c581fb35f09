"""A plugin class is validated once while unchanged, and again as soon as it changes."""

from __future__ import annotations

import importlib.metadata as md
import sys
import types

import pytest

from dihya import GenerationPluginBase
from dihya.gate.loader import Loaded, imported_as, load_plugins
from support.wheels import GROUP


def _load(plugin_site, name: str):
    plugin = next(p for p in plugin_site.discover() if p.name == name)
    return load_plugins(GROUP, [plugin.entry_point])


def test_a_class_changed_after_its_validation_is_validated_again(plugin_site) -> None:
    name = plugin_site.unique()
    plugin_site.install(name)
    loaded, failed = _load(plugin_site, name)
    assert name in loaded and not failed
    cls = loaded[name].cls
    again, failed = _load(plugin_site, name)
    assert again[name].cls is cls and again[name].hooks == loaded[name].hooks

    cls.priority = "high"  # a metadata attribute of the wrong type, set at run time
    loaded, failed = _load(plugin_site, name)
    assert name not in loaded
    assert failed[name].reason == "invalid-plugin" and "priority" in failed[name].message

    cls.priority = 5
    cls.after_generaton = lambda self, code, needs: code  # a misspelt hook, added later
    loaded, failed = _load(plugin_site, name)
    assert failed[name].reason == "invalid-plugin" and "after_generaton" in failed[name].message

    del cls.after_generaton
    loaded, failed = _load(plugin_site, name)
    assert name in loaded and not failed


def test_hooks_changed_at_run_time_are_seen(plugin_site) -> None:
    name = plugin_site.unique()
    plugin_site.install(name)
    loaded, _ = _load(plugin_site, name)
    cls = loaded[name].cls
    assert "after_generation" in loaded[name].hooks
    del cls.after_generation
    loaded, failed = _load(plugin_site, name)
    assert not failed
    assert "after_generation" not in loaded[name].hooks


class _Plugin(GenerationPluginBase):
    name = "x"


@pytest.mark.parametrize("value", ["pkg_a.mod:Cls", "pkg_a.mod:Outer.Inner", "pkg_a",
                                   "pkg_a.mod : Cls [extra]", "pkg_a.mod:Cls[a,b]"])
def test_imported_as_reads_an_entry_point_as_its_properties_do(
        value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`imported_as` matches the entry point's pattern once for its module and attribute:
    the same as its `module` and `attr` properties, each of which matches it again."""
    ep = md.EntryPoint(name="x", value=value, group=GROUP)
    module = types.ModuleType(ep.module)
    monkeypatch.setitem(sys.modules, ep.module, module)
    loaded = Loaded("x", _Plugin, _Plugin(), (), state=("validated",))
    got = imported_as(ep, loaded)
    assert got is not None
    assert (got.module_name, got.module, got.path, got.state) == (
        ep.module, module, tuple(filter(None, (ep.attr or "").split("."))), ("validated",))
    # a class that could not be remembered as validated: nothing to compare with later
    assert imported_as(ep, Loaded("x", _Plugin, _Plugin(), ())) is None
    monkeypatch.delitem(sys.modules, ep.module)
    assert imported_as(ep, loaded) is None
