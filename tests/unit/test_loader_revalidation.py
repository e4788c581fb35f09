"""A plugin class is validated once while unchanged, and again as soon as it changes."""

from __future__ import annotations

from dihya.gate.loader import load_plugins
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
