"""A rebuild with nothing else changed still checks every file of every approved plugin.

The rebuild path is answered from memory (the verification cache's checks compiled once per
entry, the import-path memo, the previous snapshot's records): these tests fail if any of
it skipped a check. Real wheels pip-installed into a private site directory, remembered by
the verification cache (their files older than its racy window), built twice as a reload
does (`previous=`), then one hashed file of each plugin changed the way someone who can
write site-packages but is not root would (a byte flipped, size and mtime put back): the
next rebuild must refuse each of them exactly as the gate does without any cache
(`DIHYA_VERIFY_CACHE=off`), leave the untouched one active, and drop the refused plugins'
modules from `sys.modules`.
"""

from __future__ import annotations

import csv
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dihya.gate import pathmemo, replay, verifycache
from dihya.gate.fingerprint import is_excluded
from dihya.registry import RegistrySnapshot, build_registry
from support.site import PluginSite, forget_plugin_modules
from support.wheels import build_plugin_wheel, pip_install

EXTRA = {"sub/helper.py": "X = 1\n", "data/table.txt": "a b c\n"}


class Site:
    """The site, the plugins' names and the config approving all of them."""

    def __init__(self, site: PluginSite, names: list[str]) -> None:
        self.site, self.names = site, names
        self.config = site.config(*(site.entry(n) for n in names))

    def dist_info(self, name: str) -> Path:
        return next(p.dist_info for p in self.site.discover() if p.name == name)

    def hashed(self, name: str) -> list[str]:
        """The files of `name` that its fingerprint covers (RECORD rows with a hash),
        relative to the site directory."""
        with (self.dist_info(name) / "RECORD").open(newline="") as fh:
            return sorted(row[0] for row in csv.reader(fh)
                          if len(row) > 1 and row[1] and not is_excluded(row[0]))

    def build(self, previous: RegistrySnapshot | None = None) -> RegistrySnapshot:
        return build_registry(self.config, path=self.site.path, previous=previous)


def _flip_keeping_size_and_mtime(path: Path) -> None:
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[0] = ord("#") if data[0] != ord("#") else ord(" ")
    path.write_bytes(bytes(data))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def _verdicts(snapshot: RegistrySnapshot, names: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for name in names:
        record = snapshot.get(name)
        out[name] = None if record is None else (record.status, record.reason)
    return out


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    monkeypatch.setenv(verifycache.ENV, str(tmp_path / "cache" / "verified.json"))
    plugins = PluginSite(tmp_path)
    probe = plugins.unique("probe")
    wheels = [build_plugin_wheel(plugins.wheels, probe,
                                 extra_files={f"dihya_plugin_{probe}/{k}": v
                                              for k, v in EXTRA.items()})]
    pip_install(sys.executable, *map(str, wheels), target=plugins.site)
    # one plugin per file its fingerprint covers, and one left untouched
    count = len(Site(plugins, [probe]).hashed(probe))
    names = [plugins.unique("rb") for _ in range(count + 1)]
    wheels = [build_plugin_wheel(plugins.wheels, n,
                                 extra_files={f"dihya_plugin_{n}/{k}": v
                                              for k, v in EXTRA.items()}) for n in names]
    pip_install(sys.executable, *map(str, wheels), target=plugins.site)
    monkeypatch.syspath_prepend(str(plugins.site))
    state = Site(plugins, names)
    # remembered only once every file is older than the racy window: wait for that
    cache = verifycache.shared()
    assert cache is not None
    deadline = time.monotonic() + 60
    while True:
        for name in names:
            cache.inspect(state.dist_info(name))
        if all(cache.remembers(state.dist_info(n)) for n in names):
            break
        assert time.monotonic() < deadline, "the cache never remembered the plugins"
        time.sleep(0.2)
    try:
        yield state
    finally:
        pathmemo.clear()
        forget_plugin_modules(names)


def test_every_hashed_file_is_looked_at_on_a_rebuild_with_nothing_changed(
        site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    first = site.build()
    second = site.build(first)
    assert all(second.get(n).active for n in site.names)
    seen: set[str] = set()
    real_stat = os.stat

    def spy(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.add(os.fspath(path))
        return real_stat(path, *args, **kwargs)

    cache = verifycache.shared()
    assert cache is not None
    misses, replayed = cache.misses, replay.STATS["hit"]
    monkeypatch.setattr(os, "stat", spy)
    third = site.build(second)
    monkeypatch.undo()
    assert all(third.get(n).active for n in site.names)
    # from memory: nothing hashed, the last build's checks replayed (`dihya.gate.replay`)
    assert cache.misses == misses and replay.STATS["hit"] == replayed + 1
    root = str(site.site.site)
    for name in site.names:
        for rel in site.hashed(name):
            assert os.path.join(root, rel) in seen, f"{rel} not looked at on the rebuild"


def test_a_file_changed_between_two_rebuilds_is_refused_on_the_next(site: Site) -> None:
    snapshot = site.build(site.build())  # a reload: the memo and compiled checks warm
    assert all(snapshot.get(n).active for n in site.names)
    control, *tampered = site.names
    assert all(f"dihya_plugin_{n}" in sys.modules for n in tampered)  # imported
    files = site.hashed(tampered[0])
    assert len(files) == len(tampered)
    root = site.site.site
    for name, rel in zip(tampered, files, strict=True):
        # the same file (relative to its own distribution) in each plugin: file i in plugin i
        own = rel.replace(tampered[0], name)
        assert own in site.hashed(name)
        _flip_keeping_size_and_mtime(root / own)
    after = site.build(snapshot)  # the rebuild after the change, nothing else changed
    got = _verdicts(after, site.names)
    assert got[control] == ("active", None)
    for name in tampered:
        assert got[name] is None or got[name][0] != "active", (name, got[name])  # type: ignore[index]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(verifycache.ENV, "off")
        assert verifycache.shared() is None
        assert _verdicts(site.build(), site.names) == got
    # every changed plugin's modules were dropped: the next load reads its files again
    for name in tampered:
        assert f"dihya_plugin_{name}" not in sys.modules, name
