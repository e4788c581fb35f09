"""The `.pth` scan after a build's imports, with the RECORD keys the gate took: attacked.

A build scans the site directories' `.pth` files after it imported the in-process plugins
(a plugin's import may write one). The site directory and every `.pth` file are `stat`ed
again there; the RECORDs read to name a `.pth` file's owner are compared by the keys the
gate took of them earlier in the same build (`pathmemo.looked_at`), not `stat`ed a second
time (docs/threat-model.md, "The `.pth` scan after the imports"). Real wheels
pip-installed into a private site directory (the one whose `.pth` files are scanned); a
plugin whose import runs what a flag file says, during a build that is not a replay
(answered by the memo, as a fresh process's is), and:

* writes a new code-running `.pth` file: that build reports it;
* rewrites a code-running `.pth` file in place, size and mtime kept: that build reports
  its new content's hash;
* rewrites another plugin's RECORD (listing a file that is not there): that build's trace
  holds the RECORD's key from before the import, so the next build notices (no replay),
  refuses that plugin and names the `.pth` file's owner as a build without any cache does.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dihya.gate import pathmemo, replay, startup, verifycache
from dihya.registry import RegistrySnapshot, build_registry
from support.polling import until_replayed
from support.site import PluginSite, forget_plugin_modules
from support.wheels import build_plugin_wheel, pip_install, plugin_source

PTH = "zz-owned.pth"


class Site:
    def __init__(self, site: PluginSite, names: dict[str, str], flag: Path) -> None:
        self.site, self.names, self.flag = site, names, flag
        self.config = site.config(*(site.entry(n) for n in names.values()))
        self.last: RegistrySnapshot | None = None

    def build(self) -> RegistrySnapshot:
        self.last = build_registry(self.config, path=self.site.path, previous=self.last)
        return self.last

    def statuses(self, snapshot: RegistrySnapshot) -> dict[str, tuple[str, str | None]]:
        found = {}
        for role, name in self.names.items():
            record = snapshot.get(name)
            assert record is not None
            found[role] = (record.status, record.reason)
        return found

    def pth(self, snapshot: RegistrySnapshot) -> list[tuple[str, str | None, str | None]]:
        return [(p.path, p.sha256, p.owner) for p in snapshot.pth]

    def without_cache(self) -> RegistrySnapshot:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(verifycache.ENV, "off")
            assert not pathmemo.enabled()
            return build_registry(self.config, path=self.site.path)

    def record(self, role: str) -> Path:
        plugin = next(p for p in self.site.discover() if p.name == self.names[role])
        return Path(plugin.dist_info) / "RECORD"

    def module(self, role: str) -> str:
        return f"dihya_plugin_{self.names[role]}"

    def import_running(self, action: str) -> RegistrySnapshot:
        """A build (not a replay: the last trace forgotten, as in a fresh process) in which
        the writer plugin is imported again and runs `action` at its import."""
        self.flag.write_text(action)
        try:
            sys.modules.pop(self.module("writer"), None)
            replay.keep(None)
            hits = pathmemo.STATS["pth.hit"] + pathmemo.STATS["pth.miss"]
            snapshot = self.build()
            assert pathmemo.STATS["pth.hit"] + pathmemo.STATS["pth.miss"] == hits + 1
            assert sys.modules.get(self.module("writer")) is not None
            return snapshot
        finally:
            self.flag.unlink()


def _warm(state: Site) -> RegistrySnapshot:
    """Build until a rebuild is answered by a replay, every plugin active, the `.pth` scan
    answered by the memo (every file past the racy window)."""
    snapshot = until_replayed(state.build)
    assert all(v == ("active", None) for v in state.statuses(snapshot).values())
    return snapshot


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("pthafter")
    site = PluginSite(root)
    flag = root / "flag.py"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(verifycache.ENV, str(root / "cache" / "verified.json"))
        mp.syspath_prepend(str(site.site))
        mp.setattr(startup, "site_directories", lambda: (str(site.site),))
        # the owner's `*.dist-info` sorts last: the scan reads the others' RECORDs first
        names = {role: site.unique(stem) for role, stem in
                 (("owner", "pz"), ("victim", "pa"), ("writer", "pb"))}
        writer = ("import pathlib as _pathlib\n"
                  f"_FLAG = _pathlib.Path({str(flag)!r})\n"
                  "if _FLAG.exists():\n"
                  f"    exec(_FLAG.read_text(), {{'SITE': {str(site.site)!r}}})\n"
                  + plugin_source(names["writer"]))
        wheels = [build_plugin_wheel(site.wheels, names["owner"],
                                     extra_files={PTH: "import os\n"}),
                  build_plugin_wheel(site.wheels, names["victim"]),
                  build_plugin_wheel(site.wheels, names["writer"], source=writer)]
        pip_install(sys.executable, *map(str, wheels), target=site.site)
        replay.keep(None)
        state = Site(site, names, flag)
        try:
            _warm(state)
            yield state
        finally:
            replay.keep(None)
            pathmemo.clear()
            forget_plugin_modules(names.values())


def test_the_pth_scan_uses_the_gates_record_keys(state: Site,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The premise: after the imports, the RECORDs are not `stat`ed again, the site
    directory and the `.pth` file are."""
    _warm(state)
    seen: list[str] = []
    real_stat = os.stat

    def spy(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(os.fspath(path))
        return real_stat(path, *args, **kwargs)

    replay.keep(None)
    monkeypatch.setattr(os, "stat", spy)
    snapshot = state.build()
    monkeypatch.undo()
    record = str(state.record("victim"))
    assert seen.count(record) == 1  # by the gate only
    # a file of the owner's distribution, so by the gate; again by the `.pth` scan
    assert seen.count(str(state.site.site / PTH)) == 2
    owner = next(p for p in state.site.discover() if p.name == state.names["owner"])
    assert state.pth(snapshot) == [(str(state.site.site / PTH),
                                    hashlib.sha256(b"import os\n").hexdigest(),
                                    owner.distribution)]


def test_a_pth_file_written_by_an_import_is_reported_by_that_build(state: Site) -> None:
    _warm(state)
    added = state.site.site / "zz-during.pth"
    try:
        snapshot = state.import_running(
            "import pathlib\n"
            "pathlib.Path(SITE, 'zz-during.pth').write_text('import sys\\n')\n")
        assert added.exists()
        assert str(added) in [p.path for p in snapshot.pth]
        assert state.pth(snapshot) == state.pth(state.without_cache())
    finally:
        added.unlink(missing_ok=True)
        _warm(state)


def test_a_pth_file_rewritten_in_place_by_an_import_is_reported_by_that_build(
        state: Site) -> None:
    _warm(state)
    pth = state.site.site / PTH
    try:
        snapshot = state.import_running(
            "import os, pathlib\n"
            f"p = pathlib.Path(SITE, {PTH!r})\n"
            "st = os.stat(p)\n"
            "p.write_bytes(b'import re\\n')\n"  # the same size
            "os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))\n")
        assert pth.read_bytes() == b"import re\n"
        found = {p.path: p.sha256 for p in snapshot.pth}
        assert found[str(pth)] == hashlib.sha256(b"import re\n").hexdigest()
        assert state.pth(snapshot) == state.pth(state.without_cache())
    finally:
        pth.write_bytes(b"import os\n")
        _warm(state)


def test_a_record_rewritten_by_an_import_is_noticed_by_the_next_build(state: Site) -> None:
    _warm(state)
    record = state.record("victim")
    before = record.read_bytes()
    module = state.module("victim")
    try:
        # the victim's RECORD now also claims the `.pth` file, and lists a missing file
        snapshot = state.import_running(
            "import pathlib\n"
            f"r = pathlib.Path({str(record)!r})\n"
            f"r.write_bytes(r.read_bytes() + b'{PTH},,\\n{module}/gone.py,,\\n')\n")
        assert record.read_bytes() != before
        assert state.statuses(snapshot)["victim"] == ("active", None)  # gated before
        trace = replay.last()
        assert trace is not None  # kept the RECORD's key from before the import
        assert dict(zip(trace.paths, trace.keys, strict=True))[str(record)] \
            != verifycache.stat_key(str(record))
        misses = replay.STATS["miss"]
        after = state.build()
        assert replay.STATS["miss"] == misses + 1, "the next build did not notice"
        fresh = state.without_cache()
        assert state.statuses(after) == state.statuses(fresh)
        assert state.statuses(after)["victim"][0] == "refused"
        assert state.pth(after) == state.pth(fresh)
    finally:
        record.write_bytes(before)
        _warm(state)
