"""The verification cache, attacked: every change made after a cached verification is seen.

Real wheels pip-installed into a private site directory, verified once (the cache then
remembers them: their files must be older than the racy window, which the fixture waits
for), then changed the way someone who can write site-packages — but is not root — would:
a byte changed with the size kept and the mtime put back, a file replaced by a rename, an
added module, package or `.pth`, an editable marker, and the cache file itself edited. Each
must give exactly the verdict the gate gives without the cache (`DIHYA_VERIFY_CACHE=off`).
"""

from __future__ import annotations

import importlib.metadata
import json
import marshal
import os
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dihya.gate import pathmemo, verifycache
from dihya.gate.decide import inspect_files
from dihya.gate.fingerprint import inspect_installed
from dihya.gate.startup import scan_pth
from dihya.registry import build_registry
from support.site import PluginSite

PLUGINS = ("hit", "utime", "rename", "shadow", "package", "sibling", "unlisted", "pth",
           "editable", "cachefile", "metadata", "foreign", "dirs")
HELPER = "helper_{}"  # a top-level module of its own, for "package" and "sibling"


class Cached:
    """The site, its plugins (role -> entry-point name) and the cache file."""

    def __init__(self, site: PluginSite, names: dict[str, str], cache: Path) -> None:
        self.site, self.names, self.cache = site, names, cache
        self.entries = {role: site.entry(name) for role, name in names.items()}

    def dist_info(self, role: str) -> Path:
        name = self.names[role]
        return next(p.dist_info for p in self.site.discover() if p.name == name)

    def module(self, role: str) -> Path:
        return self.site.site / f"dihya_plugin_{self.names[role]}" / "__init__.py"

    def verdict(self, role: str) -> tuple[str, str | None]:
        snapshot = build_registry(self.site.config(self.entries[role]), path=self.site.path)
        record = snapshot.get(self.names[role])
        return record.status, record.reason

    def verdict_without_cache(self, role: str) -> tuple[str, str | None]:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(verifycache.ENV, "off")
            assert verifycache.shared() is None
            return self.verdict(role)


def _remembered(cache: verifycache.VerifyCache, dist_info: Path) -> bool:
    cache.inspect(dist_info)
    return cache.remembers(dist_info)


@pytest.fixture(scope="module")
def cached(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cached]:
    root = tmp_path_factory.mktemp("verifycache")
    site = PluginSite(root)
    cache_file = root / "cache" / "verified.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(verifycache.ENV, str(cache_file))
        mp.syspath_prepend(str(site.site))
        names = {role: site.unique(role) for role in PLUGINS}
        for role, name in names.items():
            extra = ({f"dihya_plugin_{name}/sub/helper.py": "X = 1\n"} if role == "dirs"
                     else {f"{HELPER.format(name)}.py": "X = 1\n"}
                     if role in ("package", "sibling") else None)
            site.install(name, extra_files=extra)
        state = Cached(site, names, cache_file)
        # a file changed in the same timestamp tick as it was hashed could look unchanged:
        # the cache remembers only files older than its racy window; wait for that
        cache = verifycache.shared()
        assert cache is not None
        deadline = time.monotonic() + 60
        while not all(_remembered(cache, state.dist_info(r)) for r in PLUGINS):
            assert time.monotonic() < deadline, "the cache never remembered the plugins"
            time.sleep(0.2)
        for role in PLUGINS:
            assert state.verdict(role) == ("active", None)
        assert cache_file.exists()
        yield state


def _fresh_cache(cached: Cached) -> verifycache.VerifyCache:
    """The cache as a new process reads it from its file."""
    return verifycache.VerifyCache(cached.cache)


def _flip_keeping_size_and_mtime(path: Path) -> None:
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[-2] = ord("#") if data[-2] != ord("#") else ord(" ")
    path.write_bytes(bytes(data))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_an_unchanged_distribution_is_answered_from_the_file_by_stat(cached: Cached) -> None:
    dist_info = cached.dist_info("hit")
    cache = _fresh_cache(cached)
    found = cache.inspect(dist_info)
    assert (cache.hits, cache.misses) == (1, 0)
    assert found == inspect_installed(dist_info)
    assert cached.entries["hit"].fingerprint == found.fingerprint


def test_cache_file_is_private(cached: Cached) -> None:
    for path in (cached.cache, cached.cache.with_name(cached.cache.name + ".key")):
        st = path.lstat()
        assert stat.S_ISREG(st.st_mode) and st.st_mode & 0o777 == 0o600
        assert st.st_uid == os.geteuid()
    assert cached.cache.parent.stat().st_mode & 0o077 == 0


def test_changed_byte_with_size_and_mtime_restored_is_caught(cached: Cached) -> None:
    _flip_keeping_size_and_mtime(cached.module("utime"))
    assert cached.verdict("utime") == ("refused", "fingerprint-mismatch")
    assert cached.verdict_without_cache("utime") == ("refused", "fingerprint-mismatch")


def test_file_replaced_by_rename_is_caught(cached: Cached) -> None:
    module = cached.module("rename")
    before = module.stat()
    data = bytearray(module.read_bytes())
    data[-2] = ord("#") if data[-2] != ord("#") else ord(" ")
    twin = module.with_name("twin.tmp")
    twin.write_bytes(bytes(data))
    os.utime(twin, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.rename(twin, module)
    assert cached.verdict("rename") == ("refused", "fingerprint-mismatch")
    assert cached.verdict_without_cache("rename") == ("refused", "fingerprint-mismatch")


def test_shadowing_module_added_after_verification_is_caught(cached: Cached,
                                                              tmp_path: Path) -> None:
    name = cached.names["shadow"]
    early = tmp_path / "early"
    (early / f"dihya_plugin_{name}").mkdir(parents=True)
    (early / f"dihya_plugin_{name}" / "__init__.py").write_text("raise SystemExit('owned')\n")
    path = [str(early), *cached.site.path]
    for cache_env in (str(cached.cache), "off"):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(verifycache.ENV, cache_env)
            snapshot = build_registry(cached.site.config(cached.entries["shadow"]), path=path)
            record = snapshot.get(name)
            assert (record.status, record.reason) == ("refused", "shadowed-module")


def test_package_added_beside_a_top_level_module_is_caught(cached: Cached) -> None:
    package = cached.site.site / HELPER.format(cached.names["package"])
    package.mkdir()
    (package / "__init__.py").write_text("raise SystemExit('owned')\n")
    assert cached.verdict("package") == ("refused", "shadowed-module")
    assert cached.verdict_without_cache("package") == ("refused", "shadowed-module")


def test_bytecode_added_beside_a_top_level_module_is_caught(cached: Cached) -> None:
    (cached.site.site / f"{HELPER.format(cached.names['sibling'])}.pyc").write_bytes(b"\0" * 16)
    assert cached.verdict("sibling") == ("refused", "unlisted-file")
    assert cached.verdict_without_cache("sibling") == ("refused", "unlisted-file")


def test_unlisted_code_file_added_after_verification_is_caught(cached: Cached) -> None:
    (cached.module("unlisted").parent / "evil.py").write_text("X = 1\n")
    assert cached.verdict("unlisted") == ("refused", "unlisted-file")
    assert cached.verdict_without_cache("unlisted") == ("refused", "unlisted-file")


def test_unlisted_file_in_a_subpackage_is_caught(cached: Cached) -> None:
    (cached.module("dirs").parent / "sub" / "evil.pyc").write_bytes(b"\0" * 16)
    assert cached.verdict("dirs") == ("refused", "unlisted-file")
    assert cached.verdict_without_cache("dirs") == ("refused", "unlisted-file")


def test_pth_added_after_verification_is_reported(cached: Cached) -> None:
    pth = cached.site.site / f"zz-{cached.names['pth']}.pth"
    pth.write_text("import os\n")
    try:
        assert cached.verdict("pth") == ("active", None)  # a .pth is reported, not a verdict
        found = scan_pth(directories=[str(cached.site.site)])
        assert [p.path for p in found if not p.acknowledged] == [str(pth)]
    finally:
        pth.unlink()


def test_editable_marker_added_after_verification_is_refused(cached: Cached) -> None:
    marker = cached.dist_info("editable") / "direct_url.json"
    marker.write_text(json.dumps({"url": "file:///src", "dir_info": {"editable": True}}))
    assert cached.verdict("editable") == ("refused", "outside-distribution")
    assert cached.verdict_without_cache("editable") == ("refused", "outside-distribution")


def test_metadata_changed_after_verification_is_seen(cached: Cached) -> None:
    metadata = cached.dist_info("metadata") / "METADATA"
    before = metadata.stat()
    text = metadata.read_text()
    assert "Version: 1.0.0" in text
    metadata.write_text(text.replace("Version: 1.0.0", "Version: 6.6.6"))
    os.utime(metadata, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert metadata.stat().st_size == before.st_size
    assert cached.verdict("metadata") == ("refused", "version-mismatch")
    assert cached.verdict_without_cache("metadata") == ("refused", "version-mismatch")


def test_edited_cache_file_is_ignored_and_rewritten(cached: Cached) -> None:
    """The attacker changes the plugin and edits the cache so that its keys match the new
    file while the fingerprint stays the approved one: the file no longer authenticates."""
    module = cached.module("cachefile")
    _flip_keeping_size_and_mtime(module)
    raw = cached.cache.read_bytes()
    head, _, body = raw.partition(b"\n")
    data = marshal.loads(body)
    entry = data["dists"][os.fspath(cached.dist_info("cachefile"))]
    site = cached.site.site
    entry["keys"] = [[rel, list(verifycache.stat_key(os.path.join(site, rel)))]
                     for rel, _key in entry["keys"]]
    assert entry["fingerprint"] == cached.entries["cachefile"].fingerprint
    cached.cache.write_bytes(head + b"\n" + marshal.dumps(data))
    fresh = _fresh_cache(cached)
    assert fresh.inspect(cached.dist_info("cachefile")).fingerprint != entry["fingerprint"]
    assert fresh.misses == 1
    verifycache.reset()  # as in a new process: the shared cache reads the file
    assert cached.verdict("cachefile") == ("refused", "fingerprint-mismatch")
    assert cached.verdict_without_cache("cachefile") == ("refused", "fingerprint-mismatch")
    # a corrupted file: ignored, then replaced by an authenticated one
    cached.cache.write_bytes(b"garbage\n{}")
    fresh = _fresh_cache(cached)
    fresh.inspect(cached.dist_info("hit"))
    assert fresh.misses == 1
    fresh.save()
    assert _fresh_cache(cached).inspect(cached.dist_info("hit")).fingerprint == (
        cached.entries["hit"].fingerprint)
    assert cached.cache.read_bytes().startswith(b"dihya-verify-cache-v4 ")


# What a body that authenticates (a key leaked, a bug of another version) may hold that the
# code never writes. In the verified distributions: the whole file is ignored, the
# distribution hashed again. In a section decoded when first used (the parsed METADATA, a
# part of the memo: format v4): that section is ignored — never used — and rewritten.
DISTS = {
    "a bool in a file's key": lambda e: e["keys"][0].__setitem__(
        1, [True, *e["keys"][0][1][1:]]),
    "a key of four ints": lambda e: e["keys"][0].__setitem__(1, list(e["keys"][0][1][:4])),
    "a float in a key": lambda e: e["keys"][0].__setitem__(1, [0.5, *e["keys"][0][1][1:]]),
    "a path that is not a string": lambda e: e["keys"][0].__setitem__(0, 7),
    # checked as the site's prefix + the path: an absolute one would name another file
    "an absolute path in a file's key": lambda e: e["keys"][0].__setitem__(
        0, "/etc/hostname"),
    "an absolute path in a directory's key": lambda e: e["dirs"].append(
        ["/etc", list(verifycache.stat_key("/etc") or ())]),
    "an absolute path that must be absent": lambda e: e["absent"].append("/nowhere.py"),
    "a pair of three": lambda e: e["keys"].__setitem__(0, [*e["keys"][0], 1]),
    "a fingerprint that is None": lambda e: e.__setitem__("fingerprint", None),
    "a listed file that is bytes": lambda e: e["files"].append(b"x.py"),
    "a record key of four ints": lambda e: e.__setitem__("record_key", (1, 2, 3, 4)),
}
MEMO = {  # (the part whose section holds it, its entries)
    "a memo check with a bool key": ("x", {("x", "y"): ((("/p", (True, 0, 0, 0, 0)),), None)}),
    "a memo check that is a list": ("x", {("x", "y"): ((["/p", None],), None)}),
    "a memo key that is not a pair": ("x", {("x",): ((), None)}),
    "a memo entry of three": ("x", {("x", "y"): ((), None, 1)}),
    "another part's entry in a section": ("x", {("resolution", "y"): ((), None)}),
    "a section that is not a dict": ("x", [("x", "y")]),
}
META = {
    "a METADATA key with a bool": lambda m: m.__setitem__("key", [False, 0, 0, 0, 0]),
    "a requirement that is an int": lambda m: m.__setitem__("requires", [1]),
    "a name that is bytes": lambda m: m.__setitem__("name", b"n"),
}


def _sign(cached: Cached, data: dict[str, Any]) -> None:
    body = marshal.dumps(data)
    key = (cached.cache.parent / (cached.cache.name + ".key")).read_bytes()
    cached.cache.write_bytes(b"dihya-verify-cache-v4 " + verifycache._mac(key, body) + b"\n"
                             + body)


@pytest.fixture
def signed(cached: Cached) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The cache file as written for the plugin "hit" (its body decoded), put back after."""
    dist_info = cached.dist_info("hit")
    cache = _fresh_cache(cached)
    cache.inspect(dist_info)
    cache.metadata(dist_info, lambda: importlib.metadata.PathDistribution(dist_info).metadata)
    cache.save()  # with the METADATA of "hit" remembered
    original = cached.cache.read_bytes()
    try:
        yield dist_info, marshal.loads(original.partition(b"\n")[2])
    finally:
        cached.cache.write_bytes(original)
    unchanged = _fresh_cache(cached)  # the original file still answers: the test's control
    unchanged.inspect(dist_info)
    assert (unchanged.hits, unchanged.misses) == (1, 0)


@pytest.mark.parametrize("change", sorted(DISTS))
def test_authenticated_but_malformed_distributions_void_the_file(
        cached: Cached, signed: tuple[Path, dict[str, Any]], change: str) -> None:
    """Signed with the cache's own key, but holding what the code never writes: the
    structure checks (made per kind of element for the whole file at once) reject it."""
    dist_info, data = signed
    DISTS[change](data["dists"][os.fspath(dist_info)])
    _sign(cached, data)
    fresh = _fresh_cache(cached)
    assert fresh.memo_parts() == {}
    fresh.inspect(dist_info)
    assert (fresh.hits, fresh.misses) == (0, 1)


@pytest.mark.parametrize("change", sorted(MEMO))
def test_authenticated_but_malformed_memo_section_is_never_used(
        cached: Cached, signed: tuple[Path, dict[str, Any]], change: str) -> None:
    """A part of the persisted memo whose section holds what the code never writes: that
    part is rejected when first used (its entries never reach the memo) and rewritten."""
    dist_info, data = signed
    part, entries = MEMO[change]
    data["memo"][part] = marshal.dumps(entries)
    _sign(cached, data)
    fresh = _fresh_cache(cached)
    assert fresh.memo_entries() == {}  # one malformed part: nothing of the memo
    with pytest.raises(ValueError):
        verifycache.memo_section(part, data["memo"][part])
    fresh.inspect(dist_info)  # the verified distributions are not that section
    assert (fresh.hits, fresh.misses) == (1, 0)


def test_a_truncated_or_foreign_section_is_never_used(
        cached: Cached, signed: tuple[Path, dict[str, Any]]) -> None:
    dist_info, data = signed
    part = "links"  # a section as `pathmemo` writes one: it decodes whole
    section = marshal.dumps({(part, ("/nowhere", None)): ((("/nowhere", None),), ())})
    assert verifycache.memo_section(part, section)
    with pytest.raises(ValueError):
        verifycache.memo_section(part, section[: len(section) // 2])
    with pytest.raises(ValueError):
        verifycache.memo_section("another-part", section)
    # a section that is not bytes: the body is not what the code writes, the file is void
    _sign(cached, dict(data, memo={part: marshal.loads(section)}))
    fresh = _fresh_cache(cached)
    assert fresh.memo_parts() == {}
    fresh.inspect(dist_info)
    assert (fresh.hits, fresh.misses) == (0, 1)


@pytest.mark.parametrize("change", sorted(META))
def test_authenticated_but_malformed_metadata_section_is_never_used(
        cached: Cached, signed: tuple[Path, dict[str, Any]], change: str) -> None:
    """The parsed METADATA, decoded at the first `metadata` call: a malformed section is
    ignored (METADATA is parsed again) and the file rewritten at the next save."""
    dist_info, data = signed
    meta = marshal.loads(data["meta"])
    where = os.path.join(os.fspath(dist_info), "METADATA")
    assert where in meta, "the build remembered no METADATA"
    META[change](meta[where])
    data["meta"] = marshal.dumps(meta)
    _sign(cached, data)
    fresh = _fresh_cache(cached)
    parsed = []

    def parse() -> Any:
        parsed.append(where)
        return importlib.metadata.PathDistribution(dist_info).metadata

    found = fresh.metadata(dist_info, parse)
    assert parsed == [where] and found.version == "1.0.0"
    fresh.save()
    assert marshal.loads(marshal.loads(cached.cache.read_bytes().partition(b"\n")[2])[
        "meta"])[where]["name"] == found.name  # rewritten as parsed
    again = _fresh_cache(cached)
    again.metadata(dist_info, parse)
    assert parsed == [where]  # the rewritten section answers


def test_foreign_cache_files_are_never_read(cached: Cached, tmp_path: Path) -> None:
    dist_info = cached.dist_info("foreign")
    assert _fresh_cache(cached).inspect(dist_info) is not None
    # readable by others: not trusted
    copy = tmp_path / "loose.json"
    copy.write_bytes(cached.cache.read_bytes())
    copy.with_name("loose.json.key").write_bytes(
        cached.cache.with_name(cached.cache.name + ".key").read_bytes())
    os.chmod(copy.with_name("loose.json.key"), 0o600)
    os.chmod(copy, 0o644)
    loose = verifycache.VerifyCache(copy)
    loose.inspect(dist_info)
    assert (loose.hits, loose.misses) == (0, 1)
    # a symbolic link to a good cache file: not followed
    link = tmp_path / "link.json"
    link.symlink_to(cached.cache)
    link.with_name("link.json.key").symlink_to(cached.cache.with_name(cached.cache.name + ".key"))
    linked = verifycache.VerifyCache(link)
    linked.inspect(dist_info)
    assert (linked.hits, linked.misses) == (0, 1)
    # a good file under another key (copied from elsewhere): not authenticated
    other = tmp_path / "other.json"
    other.write_bytes(cached.cache.read_bytes())
    os.chmod(other, 0o600)
    stranger = verifycache.VerifyCache(other)
    stranger.inspect(dist_info)
    assert (stranger.hits, stranger.misses) == (0, 1)


def test_fresh_files_are_not_remembered(plugin_site) -> None:
    name = plugin_site.unique()
    plugin_site.install(name)
    plugin = next(p for p in plugin_site.discover() if p.name == name)
    cache = verifycache.VerifyCache(None)
    cache.inspect(plugin.dist_info)
    # installed a moment ago: inside the racy window, hashed again next time
    assert not cache.remembers(plugin.dist_info)


def test_refusals_are_never_remembered(plugin_site) -> None:
    name = plugin_site.unique()
    plugin_site.install(name)
    plugin = next(p for p in plugin_site.discover() if p.name == name)
    (plugin_site.site / f"dihya_plugin_{name}" / "evil.py").write_text("")
    cache = verifycache.VerifyCache(None)
    assert cache.inspect(plugin.dist_info).unlisted
    assert not cache.remembers(plugin.dist_info)


def test_off_means_no_cache(monkeypatch: pytest.MonkeyPatch, plugin_site) -> None:
    monkeypatch.setenv(verifycache.ENV, "off")
    assert verifycache.shared() is None
    name = plugin_site.unique()
    plugin_site.install(name)
    plugin = next(p for p in plugin_site.discover() if p.name == name)
    files, problem = inspect_files(plugin)
    assert problem is None and files is not None


def test_worker_side_never_uses_the_cache() -> None:
    code = ("from dihya.gate import verifycache\n"
            "verifycache.disable()\n"
            "assert verifycache.shared() is None\n")
    import subprocess

    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("valid", [True, False])
def test_a_memo_section_reaches_the_memo_only_when_it_is_well_formed(
        cached: Cached, signed: tuple[Path, dict[str, Any]], valid: bool) -> None:
    """A fresh process's memo (`pathmemo.attach`) decodes a part's section when the part is
    first recalled: a well-formed one answers; a malformed one (a check that is a list) is
    rejected whole, answers nothing and is not written back."""
    _dist_info, data = signed
    check = ("/nowhere", None) if valid else ["/nowhere", None]
    data["memo"]["links"] = marshal.dumps({("links", ("/nowhere", None)): ((check,), ())})
    _sign(cached, data)
    cache = _fresh_cache(cached)
    pathmemo.clear()
    try:
        pathmemo.attach(cache)
        rejected = pathmemo.STATS["persisted.rejected"]
        found = pathmemo.recall("links", ("/nowhere", None))
        assert found == ((True, ()) if valid else (False, None))
        assert pathmemo.STATS["persisted.rejected"] == rejected + (not valid)
        cache.save()
        written = marshal.loads(cached.cache.read_bytes().partition(b"\n")[2])["memo"]
        assert ("links" in written) is valid
    finally:
        pathmemo.clear()


def test_shared_values_writes_a_repeat_once_and_reads_back_the_same_types() -> None:
    """What a section is written from (`verifycache.shared_values`): alike values become
    one object (`marshal` writes it once, then references), and what is read back is equal
    to what was given, type for type: `True` is not `1`, `(False,)` not `(0,)`."""
    path = "/site/dihya_plugin_x-1.0.dist-info/entry_points.txt"
    key = (1, 2, 3, 4, 5)
    entries = {("discovery.dist", (str(i), "g")): (((path[:-1] + "t", key),),
                                                   (("n", True, (False,), None, b"x"),))
               for i in range(50)}
    entries[("discovery.dist", ("one", "g"))] = (((path, key),), (("n", 1, (0,), None),))
    entries[("discovery.dist", ("two", "g"))] = ((), [frozenset({1, 2}), [key]])
    table: dict[Any, Any] = {}
    shared = verifycache.shared_values(entries, table)
    assert shared == entries
    written = marshal.dumps(shared)
    assert len(written) < len(marshal.dumps(entries)) / 3
    back = marshal.loads(written)
    assert back == entries
    first = back[("discovery.dist", ("0", "g"))]
    assert first[1][0][1] is True and first[1][0][2][0] is False
    one = back[("discovery.dist", ("one", "g"))][1][0]
    assert type(one[1]) is int and type(one[2][0]) is int
    assert back[("discovery.dist", ("0", "g"))][0] is back[("discovery.dist", ("1", "g"))][0]
    assert back[("discovery.dist", ("two", "g"))][1][1] == [key]
