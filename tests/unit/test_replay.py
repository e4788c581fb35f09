"""A rebuild with nothing changed replays the last build's checks (`dihya.gate.replay`):
attacked.

Real wheels pip-installed into a private site directory (also the site directory whose
`.pth` files are scanned) behind an empty directory first on the path, built until a
rebuild is answered by replaying the last build's checks (every file past the racy window).
Then each attack is made the way someone who can write those directories but is not root
would, and the next rebuild must give exactly the verdicts (and `.pth` report) of a build
without any cache (`DIHYA_VERIFY_CACHE=off`), having noticed the change itself (the replay
did not hold): a plugin's file changed in place with its size and mtime kept, written
through a hard link in another directory, written through a shared memory mapping made
before the build (which inotify would not report, see docs/threat-model.md), replaced by
rename, a shadowing module added, a `.pth` file added. What the replay reuses besides the
gate's answer is checked too: a plugin class changed in place is validated again, a module
dropped from `sys.modules` is imported again, the environment's kill switch and a runtime
switch are honoured, a finder added to `sys.meta_path` is seen.
"""

from __future__ import annotations

import mmap
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dihya.gate import pathmemo, replay, startup, verifycache
from dihya.registry import RegistrySnapshot, build_registry
from support.polling import until_replayed
from support.site import PluginSite, forget_plugin_modules
from support.wheels import PASS_THROUGH_HOOKS, build_plugin_wheel, pip_install, plugin_source

ROLES = ("control", "inplace", "hardlink", "mmap", "rename", "shadowed", "mutated",
         "dropped", "switched", "selfchanged")

# the "selfchanged" plugin's class is changed by its own instance's creation, right after
# its validation, when the test sets this flag on `sys`
SELF_CHANGE_FLAG = "_dihya_test_change_class_at_creation"
SELF_CHANGING_HOOKS = PASS_THROUGH_HOOKS + f"""
    def __init__(self):
        super().__init__()
        if getattr(__import__("sys"), {SELF_CHANGE_FLAG!r}, False):
            type(self).priority = "high"  # the wrong type, set after the validation
"""

Verdicts = dict[str, tuple[str, str | None] | None]


class Site:
    def __init__(self, site: PluginSite, early: Path, names: dict[str, str]) -> None:
        self.site, self.early, self.names = site, early, names
        self.config = site.config(*(site.entry(n) for n in names.values()))
        self.last: RegistrySnapshot | None = None

    @property
    def path(self) -> list[str]:
        return [str(self.early), *self.site.path]

    def build(self, **kwargs: object) -> RegistrySnapshot:
        """A reload: built with the last snapshot as `previous`."""
        self.last = build_registry(self.config, path=self.path, previous=self.last,
                                   **kwargs)  # type: ignore[arg-type]
        return self.last

    def verdicts(self, snapshot: RegistrySnapshot) -> Verdicts:
        found: Verdicts = {}
        for role, name in self.names.items():
            record = snapshot.get(name)
            found[role] = None if record is None else (record.status, record.reason)
        return found

    def without_cache(self) -> tuple[Verdicts, tuple[str, ...]]:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(verifycache.ENV, "off")
            assert not pathmemo.enabled()
            snapshot = build_registry(self.config, path=self.path)
            return self.verdicts(snapshot), tuple(p.path for p in snapshot.pth)

    def module(self, role: str) -> str:
        return f"dihya_plugin_{self.names[role]}"

    def file(self, role: str) -> Path:
        return self.site.site / self.module(role) / "__init__.py"


def _warm(state: Site) -> RegistrySnapshot:
    """Build until a rebuild is answered by a replay with every plugin active."""
    snapshot = until_replayed(state.build)
    assert all(v == ("active", None) for v in state.verdicts(snapshot).values())
    return snapshot


def _noticed(state: Site, role: str, expected: tuple[str, str | None]) -> RegistrySnapshot:
    """The rebuild after an attack: the replay did not hold, the verdicts are those of a
    build without any cache, the attacked plugin's is `expected`, the others active."""
    misses = replay.STATS["miss"]
    snapshot = state.build()
    assert replay.STATS["miss"] == misses + 1, "the replay did not notice"
    got = state.verdicts(snapshot)
    fresh, _pth = state.without_cache()
    assert got == fresh
    assert got[role] == expected
    assert all(v == ("active", None) for r, v in got.items() if r != role)
    return snapshot


def _keeping_mtime(path: Path, write) -> None:  # type: ignore[no-untyped-def]
    before = os.stat(path)
    write()
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def _flipped(data: bytes) -> bytes:
    return (b"#" if data[:1] != b"#" else b" ") + data[1:]


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("replay")
    site = PluginSite(root)
    early = root / "early"
    early.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(verifycache.ENV, str(root / "cache" / "verified.json"))
        mp.syspath_prepend(str(site.site))
        # the `.pth` files scanned are those of this site directory
        mp.setattr(startup, "site_directories", lambda: (str(site.site),))
        names = {role: site.unique("rp") for role in ROLES}
        wheels = [build_plugin_wheel(site.wheels, n, source=plugin_source(
            n, body=SELF_CHANGING_HOOKS) if role == "selfchanged" else None)
            for role, n in names.items()]
        pip_install(sys.executable, *map(str, wheels), target=site.site)
        replay.keep(None)
        state = Site(site, early, names)
        try:
            _warm(state)
            yield state
        finally:
            replay.keep(None)
            pathmemo.clear()
            forget_plugin_modules(names.values())


def test_a_rebuild_with_nothing_changed_is_replayed_and_looks_at_every_file(
        state: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    before = _warm(state)
    trace = replay.last()
    assert trace is not None
    seen: set[str] = set()
    real_stat = os.stat

    def spy(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.add(os.fspath(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", spy)
    hits = replay.STATS["hit"]
    after = state.build()
    monkeypatch.undo()
    assert replay.STATS["hit"] == hits + 1
    assert set(trace.paths) <= seen
    for role in ROLES:  # every plugin's module, package directory and RECORD
        assert str(state.file(role)) in seen and str(state.file(role).parent) in seen
        record = next(p.dist_info for p in state.site.discover()
                      if p.name == state.names[role]) / "RECORD"
        assert str(record) in seen
    # the same records, the same instances (one instance serves the process)
    control = state.names["control"]
    assert after.get(control).instance is before.get(control).instance  # type: ignore[union-attr]


def test_a_file_changed_in_place_with_size_and_mtime_kept(state: Site) -> None:
    path = state.file("inplace")
    original = path.read_bytes()
    _warm(state)
    _keeping_mtime(path, lambda: path.write_bytes(_flipped(original)))
    try:
        _noticed(state, "inplace", ("refused", "fingerprint-mismatch"))
    finally:
        path.write_bytes(original)
    assert f"dihya_plugin_{state.names['inplace']}" not in sys.modules


def test_a_file_written_through_a_hard_link_elsewhere(state: Site, tmp_path: Path) -> None:
    path = state.file("hardlink")
    original = path.read_bytes()
    alias = tmp_path / "alias.py"
    os.link(path, alias)  # before the build: the link itself changes the file's ctime
    try:
        _warm(state)
        _keeping_mtime(path, lambda: alias.write_bytes(_flipped(original)))
        _noticed(state, "hardlink", ("refused", "fingerprint-mismatch"))
    finally:
        alias.write_bytes(original)
        alias.unlink()


def test_a_file_written_through_a_shared_mapping_made_before_the_build(state: Site) -> None:
    path = state.file("mmap")
    original = path.read_bytes()
    fd = os.open(path, os.O_RDWR)
    try:
        mapping = mmap.mmap(fd, 0, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)
    try:
        _warm(state)
        # no write(2), no open after the build: only the mapping
        _keeping_mtime(path, lambda: (mapping.__setitem__(0, _flipped(original)[0]),
                                      mapping.flush()))
        assert path.read_bytes() != original
        _noticed(state, "mmap", ("refused", "fingerprint-mismatch"))
    finally:
        mapping[0] = original[0]
        mapping.close()


def test_a_file_replaced_by_rename(state: Site) -> None:
    path = state.file("rename")
    original = path.read_bytes()
    _warm(state)
    other = path.with_name("__init__.py.new")
    other.write_bytes(_flipped(original))
    before = os.stat(path)
    os.utime(other, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(other, path)
    try:
        _noticed(state, "rename", ("refused", "fingerprint-mismatch"))
    finally:
        path.write_bytes(original)


def test_a_shadowing_module_added_first_on_the_path(state: Site) -> None:
    _warm(state)
    shadow = state.early / f"{state.module('shadowed')}.py"
    shadow.write_text("raise SystemExit('owned')\n")
    try:
        _noticed(state, "shadowed", ("refused", "shadowed-module"))
    finally:
        shadow.unlink()


def test_a_pth_file_added_is_reported(state: Site) -> None:
    _warm(state)
    pth = state.site.site / "zz-replay.pth"
    pth.write_text("import os\n")
    try:
        misses = replay.STATS["miss"]
        snapshot = state.build()
        assert replay.STATS["miss"] == misses + 1
        assert [p.path for p in snapshot.pth] == [str(pth)]
        assert tuple(p.path for p in snapshot.pth) == state.without_cache()[1]
    finally:
        pth.unlink()


def test_a_class_changed_in_place_is_validated_again(state: Site) -> None:
    snapshot = _warm(state)
    record = snapshot.get(state.names["mutated"])
    assert record is not None and record.instance is not None
    cls = type(record.instance)
    cls.priority = "high"  # type: ignore[assignment]  # the wrong type, set at run time
    try:
        hits = replay.STATS["hit"]
        again = state.build()
        assert replay.STATS["hit"] == hits + 1  # no file changed: the class is looked at
        got = again.get(state.names["mutated"])
        assert got is not None and (got.status, got.reason) == ("failed", "invalid-plugin")
        replay.keep(None)  # the same as a build that replays nothing
        full = state.build().get(state.names["mutated"])
        assert full is not None and (full.status, full.reason) == (got.status, got.reason)
    finally:
        cls.priority = 100
    assert state.build().get(state.names["mutated"]).active  # type: ignore[union-attr]


def test_a_module_dropped_is_imported_again(state: Site) -> None:
    snapshot = _warm(state)
    old = snapshot.get(state.names["dropped"])
    assert old is not None
    del sys.modules[state.module("dropped")]
    hits = replay.STATS["hit"]
    again = state.build()
    assert replay.STATS["hit"] == hits + 1
    new = again.get(state.names["dropped"])
    assert new is not None and new.active and new.instance is not old.instance
    assert state.module("dropped") in sys.modules


def test_the_environment_kill_switch_is_honoured(state: Site) -> None:
    _warm(state)
    name = state.names["switched"]
    off = state.build(environ={"DIHYA_PLUGINS_DISABLE": name})
    assert (off.get(name).status, off.get(name).reason) == (  # type: ignore[union-attr]
        "disabled", "disabled-by-env")
    back = state.build(environ={})
    assert back.get(name).active  # type: ignore[union-attr]
    _warm(state)
    # a runtime switch from the store (an admin's disable)
    off = state.build(switches={name: ("disabled-by-admin", "disabled by an admin")})
    assert (off.get(name).status, off.get(name).reason) == (  # type: ignore[union-attr]
        "disabled", "disabled-by-admin")
    assert state.build().get(name).active  # type: ignore[union-attr]


class _DistributionFinder:
    """A `sys.meta_path` finder that could find distributions (not a standard one)."""

    def find_spec(self, *args: object) -> None:
        return None

    def find_distributions(self, *args: object, **kwargs: object) -> Iterator[object]:
        return iter(())


def test_a_finder_added_to_the_import_system_is_seen(state: Site) -> None:
    _warm(state)
    finder = _DistributionFinder()
    sys.meta_path.append(finder)
    try:
        misses = replay.STATS["miss"]
        snapshot = state.build()
        assert replay.STATS["miss"] == misses + 1
        assert all(v == ("active", None) for v in state.verdicts(snapshot).values())
    finally:
        sys.meta_path.remove(finder)


def test_a_class_changed_by_its_own_creation_is_validated_again(state: Site) -> None:
    """The state a replay compares a kept class with is the one its validation saw, not
    the one after its instance was made (`Loaded.state`): a class its own `__init__` makes
    invalid right after the validation is validated again at the next (replayed) build."""
    _warm(state)
    name, module = state.names["selfchanged"], state.module("selfchanged")
    setattr(sys, SELF_CHANGE_FLAG, True)
    try:
        del sys.modules[module]  # imported, validated and created again by the next build
        hits = replay.STATS["hit"]
        loaded = state.build()
        assert replay.STATS["hit"] == hits + 1
        record = loaded.get(name)
        assert record is not None and record.active  # validated before its creation
        assert record.instance is not None and type(record.instance).priority == "high"
        again = state.build()  # nothing changed on disk: replayed, the class looked at
        assert replay.STATS["hit"] == hits + 2
        got = again.get(name)
        assert got is not None and (got.status, got.reason) == ("failed", "invalid-plugin")
        assert "priority" in got.message
        replay.keep(None)  # the same as a build that replays nothing
        full = state.build().get(name)
        assert full is not None and (full.status, full.reason) == (got.status, got.reason)
    finally:
        delattr(sys, SELF_CHANGE_FLAG)
        sys.modules[module].Plugin.priority = 100
    assert state.build().get(name).active  # type: ignore[union-attr]
