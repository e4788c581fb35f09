"""The import-path memo, attacked: every change made to the import path after a build
remembered it is seen by the next build.

Real wheels pip-installed into a private site directory behind an empty directory that
comes first on the path (where a shadowing module would be dropped), built until the memo
answers every part from memory (its keys must be older than the racy window, which the
fixture waits for), then changed the way someone who can write those directories — but is
not root — would: a shadowing module or package added, a `.pth` added, a distribution added
or removed, a dependency's version changed (by an upgrade, and in place with the size and
the mtime kept), an `entry_points.txt` rewritten in place with the size and mtime kept, and
changes made in the same second as the memo was written. Each must give exactly the
verdict of a build without any cache (`DIHYA_VERIFY_CACHE=off`).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dihya.gate import pathmemo, replay, verifycache
from dihya.gate.startup import scan_pth
from dihya.registry import build_registry
from support.site import PluginSite
from support.wheels import build_plugin_wheel, build_wheel, pip_install

ROLES = ("hit", "early_module", "early_package", "sibling", "duplicate", "removed",
         "upgrade_dep", "inplace_dep", "entry_points", "racy", "record")
HELPER = "helper_{}"
DEP = "discodep-{}"
# the same length as the plugin group's name, so an in-place rewrite keeps the file's size
OTHER_GROUP = "dihya.generation_nothing"


class Site:
    """The site, the early directory, the plugins (role -> entry-point name)."""

    def __init__(self, site: PluginSite, early: Path, names: dict[str, str]) -> None:
        self.site, self.early, self.names = site, early, names
        self.entries = {role: site.entry(name) for role, name in names.items()}

    @property
    def path(self) -> list[str]:
        return [str(self.early), *self.site.path]

    def config(self):  # type: ignore[no-untyped-def]
        return self.site.config(*self.entries.values())

    def build(self):  # type: ignore[no-untyped-def]
        return build_registry(self.config(), path=self.path)

    def verdicts(self) -> dict[str, tuple[str, str | None] | None]:
        snapshot = self.build()
        found: dict[str, tuple[str, str | None] | None] = {}
        for role, name in self.names.items():
            record = snapshot.get(name)
            found[role] = None if record is None else (record.status, record.reason)
        return found

    def verdicts_without_cache(self) -> dict[str, tuple[str, str | None] | None]:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(verifycache.ENV, "off")
            assert not pathmemo.enabled()
            return self.verdicts()

    def both(self, role: str) -> tuple[tuple[str, str | None] | None, ...]:
        """The role's verdict with the memo, then without any cache; they must agree."""
        cached, fresh = self.verdicts(), self.verdicts_without_cache()
        assert cached == fresh, {r: (cached[r], fresh[r]) for r in cached
                                 if cached[r] != fresh[r]}
        return cached[role], fresh[role]

    def dist_info(self, role: str) -> Path:
        name = self.names[role]
        return next(p.dist_info for p in self.site.discover() if p.name == name)


def _misses() -> int:
    return sum(v for k, v in pathmemo.STATS.items() if k.endswith(".miss")
               and not k.startswith("discovery.listing") and not k.startswith("version"))


def _warm(state: Site, *, replayed: bool = False) -> None:
    """Build until a build is answered from memory (the files are past the racy window):
    by the memo, or by replaying the last build's checks (`dihya.gate.replay`, which only
    a build answered wholly by the memo leaves). With `replayed`, until a build replayed
    the last one's: then the next build replays too (a build the memo answered may still
    have found a key too young to leave a trace, on a loaded machine)."""
    deadline = time.monotonic() + 60
    while True:
        before = _misses()
        hits = pathmemo.STATS["resolution.hit"], replay.STATS["hit"]
        verdicts = state.verdicts()
        memo_hit = pathmemo.STATS["resolution.hit"] > hits[0] and not replayed
        if _misses() == before and (memo_hit or replay.STATS["hit"] > hits[1]):
            break
        assert time.monotonic() < deadline, f"the memo never answered: {pathmemo.STATS}"
        time.sleep(0.2)
    assert all(v == ("active", None) for v in verdicts.values()), verdicts


@pytest.fixture(scope="module")
def memo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("pathmemo")
    site = PluginSite(root)
    early = root / "early"
    early.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(verifycache.ENV, str(root / "cache" / "verified.json"))
        mp.syspath_prepend(str(site.site))
        names = {role: site.unique(role) for role in ROLES}
        for role, name in names.items():
            extra = {f"{HELPER.format(name)}.py": "X = 1\n"} if role == "sibling" else None
            requires: tuple[str, ...] = ("dihya-core",)
            if role in ("upgrade_dep", "inplace_dep"):
                dep = DEP.format(name)
                requires = ("dihya-core", f"{dep}>=1.0")
                pip_install(sys.executable, str(_dep_wheel(root, dep, "1.0.0")),
                            target=site.site)
            pip_install(sys.executable, str(build_plugin_wheel(
                site.wheels, name, extra_files=extra, requires=requires)), target=site.site)
        # a distribution that declares an entry point of another group, of the same length
        other = build_wheel(root / "other", f"discoother-{names['entry_points']}", "1.0.0",
                            {"discoother/__init__.py": "def f():\n    pass\n"},
                            {names["entry_points"]: "discoother:f"}, (), group=OTHER_GROUP)
        pip_install(sys.executable, str(other), target=site.site)
        state = Site(site, early, names)
        _warm(state, replayed=True)
        yield state


def _dep_wheel(root: Path, dep: str, version: str) -> Path:
    module = dep.replace("-", "_")
    return build_wheel(root / "deps" / version, dep, version, {f"{module}/__init__.py": ""},
                       {}, ())


def _keeping_size_and_mtime(path: Path, old: str, new: str) -> None:
    assert len(old.encode()) == len(new.encode())
    before = path.stat()
    data = path.read_bytes()  # bytes: RECORD's line ends are kept as they are
    assert old.encode() in data
    path.write_bytes(data.replace(old.encode(), new.encode()))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_an_unchanged_path_is_answered_from_memory(memo: Site) -> None:
    # nothing changed since the last build: its checks are replayed, the memo not consulted
    before, replayed = pathmemo.STATS.copy(), replay.STATS["hit"]
    assert memo.verdicts()["hit"] == ("active", None)
    assert replay.STATS["hit"] == replayed + 1
    assert all(pathmemo.STATS[k] == before[k] for k in pathmemo.STATS)
    # without that trace, the memo answers every part
    replay.keep(None)
    before = pathmemo.STATS.copy()
    assert memo.verdicts()["hit"] == ("active", None)
    delta = {k: pathmemo.STATS[k] - before[k] for k in pathmemo.STATS}
    assert delta["resolution.hit"] == len(ROLES)
    assert delta["resolution.miss"] == 0
    assert delta["discovery.dist.miss"] == 0
    assert delta["discovery.dist.hit"] >= len(ROLES)


def test_module_added_first_on_the_path_is_caught(memo: Site) -> None:
    name = memo.names["early_module"]
    module = memo.early / f"dihya_plugin_{name}.py"
    module.write_text("raise SystemExit('owned')\n")
    try:
        # a package dir of the same name later on the path wins over a module file only
        # in the same directory: here the earlier entry's module is what `import` runs
        assert memo.both("early_module") == (("refused", "shadowed-module"),) * 2
    finally:
        module.unlink()
    assert memo.both("early_module") == (("active", None),) * 2


def test_package_added_first_on_the_path_is_caught(memo: Site) -> None:
    package = memo.early / f"dihya_plugin_{memo.names['early_package']}"
    package.mkdir()
    try:
        # an empty directory: a namespace portion, which the plugin's regular package beats
        assert memo.both("early_package") == (("active", None),) * 2
        (package / "__init__.py").write_text("raise SystemExit('owned')\n")
        # the directory's own key changed, not the path entry's: still seen
        assert memo.both("early_package") == (("refused", "shadowed-module"),) * 2
    finally:
        shutil.rmtree(package)
    assert memo.both("early_package") == (("active", None),) * 2


def test_package_added_beside_a_top_level_module_in_site_packages_is_caught(
        memo: Site) -> None:
    package = memo.site.site / HELPER.format(memo.names["sibling"])
    package.mkdir()
    (package / "__init__.py").write_text("raise SystemExit('owned')\n")
    assert memo.both("sibling") == (("refused", "shadowed-module"),) * 2


def test_pth_added_is_reported(memo: Site) -> None:
    directories = [str(memo.site.site)]
    deadline = time.monotonic() + 60
    while True:  # until the scan is answered from memory (past the racy window)
        hits = pathmemo.STATS["pth.hit"]
        assert scan_pth(directories=directories) == ()
        if pathmemo.STATS["pth.hit"] > hits:
            break
        assert time.monotonic() < deadline, "the memo never answered the scan"
        time.sleep(0.2)
    pth = memo.site.site / "zz-pathmemo.pth"
    pth.write_text("import os\n")
    try:
        found = scan_pth(directories=directories)
        assert [p.path for p in found] == [str(pth)]
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(verifycache.ENV, "off")
            assert scan_pth(directories=directories) == found
        # rewritten in place, same size, mtime put back: another hash
        _keeping_size_and_mtime(pth, "import os", "import re")
        again = scan_pth(directories=directories)
        assert again[0].sha256 != found[0].sha256
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(verifycache.ENV, "off")
            assert scan_pth(directories=directories) == again
    finally:
        pth.unlink()
    assert scan_pth(directories=directories) == ()


def test_new_distribution_with_the_same_name_is_caught(memo: Site) -> None:
    name = memo.names["duplicate"]
    wheel = build_plugin_wheel(memo.site.root / "dup", name,
                               distribution=f"dihya-plugin-other-{name}",
                               source="raise SystemExit('owned')\n")
    pip_install(sys.executable, str(wheel), target=memo.site.site)
    assert memo.both("duplicate") == (("refused", "duplicate-name"),) * 2


def test_removed_distribution_is_gone(memo: Site) -> None:
    dist_info = memo.dist_info("removed")
    shutil.rmtree(dist_info)
    shutil.rmtree(memo.site.site / f"dihya_plugin_{memo.names['removed']}")
    assert memo.both("removed") == (None, None)


def test_dependency_downgraded_is_caught(memo: Site) -> None:
    dep = DEP.format(memo.names["upgrade_dep"])
    for old in memo.site.site.glob(f"{dep.replace('-', '_')}-*.dist-info"):
        shutil.rmtree(old)
    pip_install(sys.executable, str(_dep_wheel(memo.site.root, dep, "0.5.0")),
                target=memo.site.site)
    assert memo.both("upgrade_dep") == (("failed", "missing-dependency"),) * 2


def test_dependency_version_changed_in_place_is_caught(memo: Site) -> None:
    dep = DEP.format(memo.names["inplace_dep"]).replace("-", "_")
    metadata = next(memo.site.site.glob(f"{dep}-*.dist-info")) / "METADATA"
    _keeping_size_and_mtime(metadata, "Version: 1.0.0", "Version: 0.0.1")
    assert memo.both("inplace_dep") == (("failed", "missing-dependency"),) * 2


def test_entry_points_rewritten_in_place_are_caught(memo: Site) -> None:
    """Another distribution starts declaring the approved plugin's name: its
    `entry_points.txt` rewritten with the size and the mtime kept."""
    other = next(memo.site.site.glob("discoother*.dist-info")) / "entry_points.txt"
    _keeping_size_and_mtime(other, OTHER_GROUP, "dihya.generation_plugins")
    assert memo.both("entry_points") == (("refused", "duplicate-name"),) * 2


def test_changes_in_the_same_second_as_the_memo_are_seen(memo: Site) -> None:
    """Builds and changes back to back, well inside one second and one timestamp tick:
    what a build just remembered never hides the change that follows it."""
    name = memo.names["racy"]
    module = memo.early / f"dihya_plugin_{name}.py"
    info = memo.early / f"dihya_plugin_racy_{name}-1.0.dist-info"
    for _ in range(3):
        assert memo.verdicts()["racy"] == ("active", None)
        module.write_text("raise SystemExit('owned')\n")
        assert memo.verdicts()["racy"] == ("refused", "shadowed-module")
        module.unlink()
        assert memo.verdicts()["racy"] == ("active", None)
        # a distribution declaring the same name appears and goes, as quickly
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: racy\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[dihya.generation_plugins]\n{name} = x:y\n")
        assert memo.verdicts()["racy"] == ("refused", "duplicate-name")
        shutil.rmtree(info)
    assert memo.both("racy") == (("active", None),) * 2


def test_fresh_keys_are_not_trusted(tmp_path: Path) -> None:
    """The racy-clean rule: a directory changed less than 2 s before a result was computed
    is not remembered; an old one is."""
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    now = time.time_ns()
    checks = pathmemo.checks([str(fresh)])
    assert not pathmemo.settled(checks, now)
    old = now - 10 * 10**9
    os.utime(fresh, ns=(old, old))  # the mtime can be put back, not the ctime
    assert not pathmemo.settled(pathmemo.checks([str(fresh)]), now)
    assert pathmemo.settled(checks, now + verifycache.RACY_NS + 10**9)
    # an absent path is only trusted with its directory's key
    missing = str(fresh / "missing")
    assert not pathmemo.settled(pathmemo.checks([missing]), now + 10 * 10**9)
    assert pathmemo.settled(pathmemo.checks([missing, str(fresh)]), now + 10 * 10**9)


def test_off_means_nothing_remembered(monkeypatch: pytest.MonkeyPatch,
                                      plugin_site: PluginSite) -> None:
    monkeypatch.setenv(verifycache.ENV, "off")
    name = plugin_site.unique()
    plugin_site.install(name)
    before = pathmemo.STATS.copy()
    build_registry(plugin_site.config(plugin_site.entry(name)), path=plugin_site.path)
    assert dict(pathmemo.STATS) == dict(before)


def test_an_unrelated_install_recomputes_only_what_it_touched(memo: Site) -> None:
    """A new distribution changes site-packages: the others' resolution is answered from
    what site-packages holds under their names (unchanged), not recomputed."""
    wheel = build_wheel(memo.site.root / "unrelated", "discounrelated", "1.0.0",
                        {"discounrelated/__init__.py": ""}, {}, ())
    pip_install(sys.executable, str(wheel), target=memo.site.site)
    before = pathmemo.STATS.copy()
    cached = memo.verdicts()
    assert pathmemo.STATS["resolution.miss"] == before["resolution.miss"]
    assert pathmemo.STATS["resolution.hit"] > before["resolution.hit"]
    assert cached == memo.verdicts_without_cache()


def test_record_rewritten_in_place_is_read_again(memo: Site) -> None:
    """RECORD is keyed on its `stat` (not read while unchanged): rewritten with the size and
    the mtime kept, so that the plugin's module is no longer listed, it is read again."""
    record = memo.dist_info("record") / "RECORD"
    name = memo.names["record"]
    _keeping_size_and_mtime(record, f"dihya_plugin_{name}/__init__.py",
                            f"dihya_plugin_{name}/__init__.pz")
    cached, fresh = memo.both("record")
    assert cached == fresh == ("refused", "missing-file")
