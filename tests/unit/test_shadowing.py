"""The gate sees shadowing: every module a plugin lists must be imported from its own file.

Real wheels installed with pip into a private site directory; the shadowing files are what
someone who can write to the import path would add. Each case leaves the plugin's own
files untouched (same fingerprint), so only the resolution check can refuse it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from dihya.gate.decide import SHADOWED_MODULE, STATUSES, inspect_files, shadowing_problem
from dihya.registry import build_registry
from support.wheels import build_wheel, pip_install, plugin_source

PWNED = "open({marker!r}, 'w').close()\n"


def install(plugin_site, distribution: str, files: dict[str, str], entry: str) -> None:
    wheel = build_wheel(plugin_site.wheels, distribution, "1.0.0", files,
                        {distribution.rpartition("-")[2]: entry})
    pip_install(sys.executable, str(wheel), target=plugin_site.site)


def status(plugin_site, name: str, path: list[str] | None = None) -> tuple[str, str | None, str]:
    snapshot = build_registry(plugin_site.config(plugin_site.entry(name)),
                              path=path or plugin_site.path)
    record = snapshot.get(name)
    return record.status, record.reason, record.message


def plugin_with_helper(plugin_site) -> tuple[str, str]:
    """An in-process plugin whose package imports a top-level helper module of its own."""
    name = plugin_site.unique()
    helper = f"helper_{name}"
    source = f"import {helper}\n" + plugin_source(name)
    install(plugin_site, f"dihya-plugin-{name}",
            {f"dihya_plugin_{name}/__init__.py": source, f"{helper}.py": "VALUE = 1\n"},
            f"dihya_plugin_{name}:Plugin")
    return name, helper


def namespaced_plugin(plugin_site) -> tuple[str, str]:
    """A plugin in namespace packages `ns_U` and `ns_U.plugins` (no `__init__.py` in them)."""
    name = plugin_site.unique()
    ns = f"ns_{name}"
    install(plugin_site, f"dihya-plugin-{name}",
            {f"{ns}/plugins/{name}/__init__.py": plugin_source(name),
             f"{ns}/plugins/{name}/util.py": "X = 1\n"},
            f"{ns}.plugins.{name}:Plugin")
    return name, ns


def test_shadowed_module_is_a_refused_reason() -> None:
    assert SHADOWED_MODULE in STATUSES["refused"]


def test_untouched_plugins_pass(plugin_site) -> None:
    helper_name, _ = plugin_with_helper(plugin_site)
    ns_name, _ = namespaced_plugin(plugin_site)
    for name in (helper_name, ns_name):
        assert status(plugin_site, name)[:2] == ("active", None)


def test_package_dir_beside_the_entry_points_top_level_module(plugin_site,
                                                                tmp_path: Path) -> None:
    name = plugin_site.unique()
    module = f"mod_{name}"
    install(plugin_site, f"dihya-plugin-{name}", {f"{module}.py": plugin_source(name)},
            f"{module}:Plugin")
    assert status(plugin_site, name)[:2] == ("active", None)
    marker = tmp_path / "pwned"
    (plugin_site.site / module).mkdir()
    (plugin_site.site / module / "__init__.py").write_text(
        PWNED.format(marker=str(marker)) + plugin_source(name))
    state, reason, message = status(plugin_site, name)
    assert (state, reason) == ("refused", SHADOWED_MODULE)
    assert f"{plugin_site.site / module / '__init__.py'}" in message
    assert not marker.exists(), "the shadowing package ran"


def test_package_dir_beside_a_helper_module_that_is_not_the_entry_point(
        plugin_site, tmp_path: Path) -> None:
    name, helper = plugin_with_helper(plugin_site)
    marker = tmp_path / "pwned"
    (plugin_site.site / helper).mkdir()
    (plugin_site.site / helper / "__init__.py").write_text(PWNED.format(marker=str(marker)))
    state, reason, message = status(plugin_site, name)
    assert (state, reason) == ("refused", SHADOWED_MODULE)
    assert f"{helper}/__init__.py" in message and f"{helper}.py" in message
    assert not marker.exists(), "the shadowing package ran in the backend"


@pytest.mark.parametrize("level", ["ns", "ns/plugins"])
def test_init_added_to_a_namespace_package_the_plugin_uses(plugin_site, tmp_path: Path,
                                                          level: str) -> None:
    name, ns = namespaced_plugin(plugin_site)
    marker = tmp_path / "pwned"
    init = plugin_site.site / level.replace("ns", ns, 1) / "__init__.py"
    init.write_text(PWNED.format(marker=str(marker)))
    state, reason, message = status(plugin_site, name)
    assert (state, reason) == ("refused", SHADOWED_MODULE)
    assert str(init) in message and "namespace package" in message
    assert not marker.exists()


def test_module_added_beside_a_namespace_package_dir(plugin_site) -> None:
    name, ns = namespaced_plugin(plugin_site)
    # `ns_U.py` wins over the namespace directory `ns_U/` of the same path entry
    (plugin_site.site / f"{ns}.py").write_text("__path__ = []\n")
    state, reason, message = status(plugin_site, name)
    assert (state, reason) == ("refused", SHADOWED_MODULE)
    assert f"{ns}.py" in message


def test_same_module_in_an_earlier_path_entry(plugin_site, tmp_path: Path) -> None:
    name = plugin_site.unique()
    plugin_site.install(name)
    entry = plugin_site.entry(name)
    shadow = tmp_path / "shadow"
    (shadow / f"dihya_plugin_{name}").mkdir(parents=True)
    (shadow / f"dihya_plugin_{name}" / "__init__.py").write_text("raise SystemExit('owned')\n")
    path = [str(shadow), *plugin_site.path]
    snapshot = build_registry(plugin_site.config(entry), path=path)
    record = snapshot.get(name)
    assert (record.status, record.reason) == ("refused", SHADOWED_MODULE)
    assert str(shadow / f"dihya_plugin_{name}" / "__init__.py") in record.message


def test_a_later_path_entry_does_not_shadow(plugin_site, tmp_path: Path) -> None:
    name, helper = plugin_with_helper(plugin_site)
    later = tmp_path / "later"
    later.mkdir()
    (later / f"{helper}.py").write_text("raise SystemExit('never imported')\n")
    assert status(plugin_site, name, [*plugin_site.path, str(later)])[:2] == ("active", None)


def test_namespace_portion_in_an_earlier_entry_with_a_module_of_the_same_name(
        plugin_site, tmp_path: Path) -> None:
    name, ns = namespaced_plugin(plugin_site)
    early = tmp_path / "early"
    (early / ns / "plugins").mkdir(parents=True)  # namespace portions: no __init__.py
    intruder = early / ns / "plugins" / f"{name}.py"
    intruder.write_text("raise SystemExit('owned')\n")
    path = [str(early), *plugin_site.path]
    state, reason, message = status(plugin_site, name, path)
    assert (state, reason) == ("refused", SHADOWED_MODULE)
    assert str(intruder) in message


def test_namespace_portion_in_an_earlier_entry_shadowing_a_submodule(
        plugin_site, tmp_path: Path) -> None:
    name, ns = namespaced_plugin(plugin_site)
    early = tmp_path / "early"
    (early / ns / "plugins" / name).mkdir(parents=True)
    # an earlier portion holding the plugin's package as a namespace dir is harmless...
    assert status(plugin_site, name, [str(early), *plugin_site.path])[:2] == ("active", None)
    # ...a regular package there is not
    (early / ns / "plugins" / name / "__init__.py").write_text("")
    state, reason, message = status(plugin_site, name, [str(early), *plugin_site.path])
    assert (state, reason) == ("refused", SHADOWED_MODULE)
    assert str(early / ns / "plugins" / name / "__init__.py") in message


def test_helper_named_like_a_builtin_module_is_never_its_own(plugin_site) -> None:
    name = plugin_site.unique()
    install(plugin_site, f"dihya-plugin-{name}",
            {f"dihya_plugin_{name}/__init__.py": plugin_source(name), "xxsubtype.py": ""},
            f"dihya_plugin_{name}:Plugin")
    state, reason, message = status(plugin_site, name)
    assert (state, reason) == ("refused", SHADOWED_MODULE)
    assert "built-in module 'xxsubtype'" in message


def test_unlisted_file_inside_the_package_is_still_unlisted_file(plugin_site) -> None:
    name = plugin_site.unique()
    plugin_site.install(name)
    (plugin_site.site / f"dihya_plugin_{name}" / "extra.py").write_text("")
    assert status(plugin_site, name)[:2] == ("refused", "unlisted-file")


def test_shadowing_problem_on_the_real_sys_path(plugin_site) -> None:
    """What the sandbox worker calls: `path` left out means `sys.path` and `sys.meta_path`."""
    name, helper = plugin_with_helper(plugin_site)
    plugin = next(p for p in plugin_site.discover() if p.name == name)
    files, problem = inspect_files(plugin)
    assert files is not None and problem is None
    assert shadowing_problem(plugin, files) is None  # the fixture put the site on sys.path
    (plugin_site.site / helper).mkdir()
    (plugin_site.site / helper / "__init__.py").write_text("")
    message = shadowing_problem(plugin, files)
    assert message is not None and f"{helper}/__init__.py" in message


def test_listed_file_replaced_by_a_link_to_the_same_bytes_elsewhere(plugin_site,
                                                                    tmp_path: Path) -> None:
    """Same content, same fingerprint; but the code would be read from a file outside
    site-packages that whoever owns it can change after the gate looked."""
    name, helper = plugin_with_helper(plugin_site)
    outside = tmp_path / "elsewhere" / f"{helper}.py"
    outside.parent.mkdir()
    listed = plugin_site.site / f"{helper}.py"
    outside.write_bytes(listed.read_bytes())
    listed.unlink()
    listed.symlink_to(outside)
    state, reason, message = status(plugin_site, name)
    assert (state, reason) == ("refused", SHADOWED_MODULE)
    assert f"{listed} (a link to {outside})" in message


class _ClaimingFinder:
    """A meta-path finder ahead of PathFinder, as a `.pth` line could install one."""

    def __init__(self, name: str, origin: str | None) -> None:
        self.name, self.origin = name, origin

    def find_spec(self, fullname, path=None, target=None):
        import importlib.util

        if fullname != self.name:
            return None
        if self.origin is None:
            raise RuntimeError("finder broke")
        return importlib.util.spec_from_file_location(fullname, self.origin)


@pytest.mark.parametrize("origin", ["/elsewhere/helper.py", None])
def test_meta_path_finders_before_pathfinder_count_on_the_real_path(plugin_site, origin) -> None:
    name, helper = plugin_with_helper(plugin_site)
    plugin = next(p for p in plugin_site.discover() if p.name == name)
    files, _ = inspect_files(plugin)
    finder = _ClaimingFinder(helper, origin)
    sys.meta_path.insert(0, finder)
    try:
        message = shadowing_problem(plugin, files)
        # an explicit path (tests, custom sites) consults only the path-independent finders
        explicit = shadowing_problem(plugin, files, plugin_site.path)
    finally:
        sys.meta_path.remove(finder)
    assert message is not None and helper in message
    assert ("/elsewhere/helper.py" if origin else "RuntimeError: finder broke") in message
    assert explicit is None
