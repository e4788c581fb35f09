"""The gate end to end on real installed wheels: every status and reason an operator can see."""

from __future__ import annotations

import importlib.metadata as md
import sys
from pathlib import Path

import pytest

from dihya.registry import build_registry
from support.wheels import GROUP, build_wheel, pip_install, plugin_source


def statuses(snapshot) -> dict[str, tuple[str, str | None]]:
    return {r.name: (r.status, r.reason) for r in snapshot.records}


def test_unapproved_plugin_is_refused_and_never_imported(plugin_site, tmp_path: Path) -> None:
    name = plugin_site.unique()
    marker = tmp_path / "imported"
    source = f"open({str(marker)!r}, 'w').close()\n" + plugin_source(name)
    plugin_site.install(name, source=source)
    snapshot = build_registry(plugin_site.config(), path=plugin_site.path)
    assert statuses(snapshot)[name] == ("refused", "not-allowlisted")
    assert "dihya plugins approve" in snapshot.get(name).message
    assert not marker.exists(), "an unapproved plugin's module was imported"
    assert f"dihya_plugin_{name}" not in sys.modules


def test_approved_plugin_is_active_with_its_hooks(plugin_site) -> None:
    name = plugin_site.unique()
    plugin_site.install(name)
    snapshot = build_registry(plugin_site.config(plugin_site.entry(name)), path=plugin_site.path)
    record = snapshot.get(name)
    assert (record.status, record.reason) == ("active", None)
    assert record.hooks == ("before_generation", "after_generation")
    assert record.fingerprint == record.approved_fingerprint
    assert snapshot.active == (record,)


def test_one_changed_byte_is_a_fingerprint_mismatch(plugin_site) -> None:
    name = plugin_site.unique()
    plugin_site.install(name)
    entry = plugin_site.entry(name)
    module = plugin_site.site / f"dihya_plugin_{name}" / "__init__.py"
    data = bytearray(module.read_bytes())
    data[-2] = ord("#") if data[-2] != ord("#") else ord(" ")
    module.write_bytes(bytes(data))
    snapshot = build_registry(plugin_site.config(entry), path=plugin_site.path)
    assert statuses(snapshot)[name] == ("refused", "fingerprint-mismatch")


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("version", "9.9.9", "version-mismatch"),
    ("distribution", "someone-else", "distribution-mismatch"),
    ("fingerprint", "sha256:" + "0" * 64, "fingerprint-mismatch"),
])
def test_allowlist_fields_must_all_match(plugin_site, field, value, reason) -> None:
    name = plugin_site.unique()
    plugin_site.install(name)
    entry = plugin_site.entry(name, **{field: value})
    snapshot = build_registry(plugin_site.config(entry), path=plugin_site.path)
    assert statuses(snapshot)[name] == ("refused", reason)


def test_missing_file_listed_in_record(plugin_site) -> None:
    name = plugin_site.unique()
    plugin_site.install(name, extra_files={f"dihya_plugin_{name}/helpers.py": "X = 1\n"})
    entry = plugin_site.entry(name)
    (plugin_site.site / f"dihya_plugin_{name}" / "helpers.py").unlink()
    snapshot = build_registry(plugin_site.config(entry), path=plugin_site.path)
    assert statuses(snapshot)[name] == ("refused", "missing-file")
    assert "helpers.py" in snapshot.get(name).message


@pytest.mark.parametrize("intruder", ["evil.py", "evil.pyc", "sub/__init__.py",
                                      "evil.cpython-311-x86_64-linux-gnu.so"])
def test_unlisted_code_file_in_package(plugin_site, intruder: str) -> None:
    name = plugin_site.unique()
    plugin_site.install(name)
    entry = plugin_site.entry(name)
    target = plugin_site.site / f"dihya_plugin_{name}" / intruder
    target.parent.mkdir(exist_ok=True)
    target.write_text("import os\n")
    snapshot = build_registry(plugin_site.config(entry), path=plugin_site.path)
    assert statuses(snapshot)[name] == ("refused", "unlisted-file")
    assert intruder.split("/")[0] in snapshot.get(name).message


def test_pycache_is_not_an_unlisted_file(plugin_site) -> None:
    name = plugin_site.unique()
    plugin_site.install(name)
    entry = plugin_site.entry(name)
    cache = plugin_site.site / f"dihya_plugin_{name}" / "__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "__init__.cpython-311.pyc").write_bytes(b"junk")
    snapshot = build_registry(plugin_site.config(entry), path=plugin_site.path)
    assert statuses(snapshot)[name] == ("active", None)


def test_two_entry_points_with_one_name_are_both_refused(plugin_site) -> None:
    name = plugin_site.unique()
    plugin_site.install(name)
    first = plugin_site.entry(name)
    other = build_wheel(plugin_site.wheels, f"other-{name}", "1.0.0",
                        {f"other_{name}/__init__.py": plugin_source(name)},
                        {name: f"other_{name}:Plugin"})
    pip_install(sys.executable, str(other), target=plugin_site.site)
    snapshot = build_registry(plugin_site.config(first), path=plugin_site.path)
    same = [r for r in snapshot.records if r.name == name]
    assert [(r.status, r.reason) for r in same] == [("refused", "duplicate-name")] * 2
    assert snapshot.active == ()


def test_entry_point_naming_a_module_of_another_distribution(plugin_site) -> None:
    name = plugin_site.unique()
    wheel = build_wheel(plugin_site.wheels, f"dihya-plugin-{name}", "1.0.0",
                        {f"mine_{name}/__init__.py": plugin_source(name)},
                        {name: "json:JSONDecoder"})
    pip_install(sys.executable, str(wheel), target=plugin_site.site)
    entry = plugin_site.entry(name)
    snapshot = build_registry(plugin_site.config(entry), path=plugin_site.path)
    assert statuses(snapshot)[name] == ("refused", "outside-distribution")


def test_unsatisfied_requirement_is_missing_dependency(plugin_site) -> None:
    name = plugin_site.unique()
    plugin_site.install(name, requires=["dihya-core", "no-such-package-xyz>=1.0",
                                        "dihya-core>=99; python_version < '3'"])
    snapshot = build_registry(plugin_site.config(plugin_site.entry(name)), path=plugin_site.path)
    record = snapshot.get(name)
    assert (record.status, record.reason) == ("failed", "missing-dependency")
    assert "no-such-package-xyz>=1.0" in record.message
    assert "python_version" not in record.message  # markers that do not apply are skipped


@pytest.mark.parametrize(("requires", "named"), [
    ("dihya-core>=99", "dihya-core>=99"),  # a newer core than this one
    # built for an older hook API: fails, naming the range it asked for
    ("dihya-core>=0.0.1,<0.1", "dihya-core<0.1,>=0.0.1"),
])
def test_a_core_range_excluding_this_core_is_missing_dependency(plugin_site, requires: str,
                                                                 named: str) -> None:
    name = plugin_site.unique()
    plugin_site.install(name, requires=[requires])
    snapshot = build_registry(plugin_site.config(plugin_site.entry(name)), path=plugin_site.path)
    record = snapshot.get(name)
    assert (record.status, record.reason) == ("failed", "missing-dependency")
    assert named in record.message and "is installed" in record.message


def test_switches_disable(plugin_site) -> None:
    a, b = plugin_site.unique("a"), plugin_site.unique("b")
    plugin_site.install(a)
    plugin_site.install(b)
    config = plugin_site.config(plugin_site.entry(a),
                                plugin_site.entry(b, enabled=False, disabled_reason="CVE-1"))
    snapshot = build_registry(config, environ={"DIHYA_PLUGINS_DISABLE": f" x, {a} "},
                              path=plugin_site.path)
    assert statuses(snapshot)[a] == ("disabled", "disabled-by-env")
    assert statuses(snapshot)[b] == ("disabled", "disabled-by-config")
    assert "CVE-1" in snapshot.get(b).message
    assert snapshot.active == ()


def test_import_error_is_failed(plugin_site) -> None:
    name = plugin_site.unique()
    plugin_site.install(name, source="import no_such_module_xyz\n")
    snapshot = build_registry(plugin_site.config(plugin_site.entry(name)), path=plugin_site.path)
    record = snapshot.get(name)
    assert (record.status, record.reason) == ("failed", "import-error")
    assert "no_such_module_xyz" in record.message


def test_plugin_calling_sys_exit_at_import_does_not_end_the_backend(plugin_site) -> None:
    name = plugin_site.unique()
    plugin_site.install(name, source="raise SystemExit(3)\n")
    snapshot = build_registry(plugin_site.config(plugin_site.entry(name)), path=plugin_site.path)
    assert statuses(snapshot)[name] == ("failed", "import-error")


def test_failing_imports_in_one_build_stop_no_other_plugin(plugin_site) -> None:
    """One manager loads every plugin of a build: a plugin whose import raises an
    AssertionError, a SystemExit or an ImportError fails alone, in whatever order; the
    plugins around it load, and an unapproved one beside them is never imported."""
    sources = {"assert": "assert False, 'boom'\n", "exit": "raise SystemExit(3)\n",
               "missing": "import no_such_module_xyz\n"}
    good = [plugin_site.unique("a"), plugin_site.unique("m"), plugin_site.unique("z")]
    bad = {plugin_site.unique(kind): source for kind, source in sources.items()}
    for name in good:
        plugin_site.install(name)
    for name, source in bad.items():
        plugin_site.install(name, source=source)
    unapproved = plugin_site.unique("u")
    plugin_site.install(unapproved)
    entries = [plugin_site.entry(n) for n in [*good, *bad]]
    snapshot = build_registry(plugin_site.config(*entries), path=plugin_site.path)
    found = statuses(snapshot)
    for name in good:
        assert found[name] == ("active", None), snapshot.get(name).message
    for name in bad:
        assert found[name] == ("failed", "import-error"), name
    assert "boom" in snapshot.get(next(n for n in bad if n.startswith("assert"))).message
    assert found[unapproved] == ("refused", "not-allowlisted")
    assert f"dihya_plugin_{unapproved}" not in sys.modules


def test_misspelt_hook_is_invalid_plugin(plugin_site) -> None:
    name = plugin_site.unique()
    body = "\ndef befor_generation(self, needs):\n    return needs\n"
    plugin_site.install(name, source=plugin_source(name, body=body))
    snapshot = build_registry(plugin_site.config(plugin_site.entry(name)), path=plugin_site.path)
    record = snapshot.get(name)
    assert (record.status, record.reason) == ("failed", "invalid-plugin")
    assert "befor_generation" in record.message and "before_generation" in record.message
    assert "Plugin" in record.message


def test_unsafe_plugin_approved_in_process_is_refused(plugin_site) -> None:
    name = plugin_site.unique()
    plugin_site.install(name, safe=False)
    snapshot = build_registry(plugin_site.config(plugin_site.entry(name, mode="in-process")),
                              path=plugin_site.path)
    assert statuses(snapshot)[name] == ("refused", "unsafe-in-process")
    assert snapshot.active == ()


def test_active_order_is_priority_then_name(plugin_site) -> None:
    names = [plugin_site.unique(s) for s in ("c", "b", "a")]
    for n, prio in zip(names, (10, 50, 50), strict=True):
        plugin_site.install(n, priority=prio)
    config = plugin_site.config(*(plugin_site.entry(n) for n in names))
    snapshot = build_registry(config, path=plugin_site.path)
    assert [r.name for r in snapshot.active] == [names[0], names[2], names[1]]


def test_site_packages_is_the_parent_of_the_dist_info_one_path_per_directory(
        tmp_path: Path) -> None:
    """`site_packages` (asked three times per plugin and build, remembered by the
    `*.dist-info` path): the `dist_info`'s parent, one `Path` object per directory."""
    from dihya.gate.decide import site_packages
    from dihya.gate.discovery import DiscoveredPlugin

    def plugin(dist_info: Path | None) -> DiscoveredPlugin:
        ep = md.EntryPoint(name="p", value="p:Plugin", group=GROUP)
        return DiscoveredPlugin(name="p", value="p:Plugin", group=GROUP, distribution="p",
                                version="1", dist_info=dist_info, editable=False,
                                entry_point=ep)

    a, b = tmp_path / "a-1.dist-info", tmp_path / "b-1.dist-info"
    assert site_packages(plugin(a)) == a.parent == tmp_path
    assert site_packages(plugin(b)) is site_packages(plugin(a))
    assert site_packages(plugin(a / "x-1.dist-info")) == a
    assert site_packages(plugin(Path("rel-1.dist-info"))) == Path(".")
    assert site_packages(plugin(None)) is None
