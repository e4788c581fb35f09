"""The import-path memo across processes: a fresh process answers from the persisted memo,
and every change made between two processes — or to the cache file itself — is seen.

Real wheels pip-installed into a private site directory behind an empty directory, both
first on `sys.path` of a probe script run in a SUBPROCESS (as a new `dihya plugins list`,
a new server worker): it builds the registry, scans the `.pth` files of the two directories
and prints the verdicts and `pathmemo.STATS`. The fixture runs it until a process answers
discovery and module resolution from the memo a previous process persisted (the files
must be older than the racy window first). Then each test changes something the way
someone who can write those directories — but not the config, and not this user's cache
directory — would, or damages the cache file, and the next process must give exactly the
verdicts of a process without any cache (`DIHYA_VERIFY_CACHE=off`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dihya.gate import verifycache
from support.site import PluginSite
from support.wheels import build_plugin_wheel, build_wheel, pip_install

ROLES = ("hit", "shadow", "pth", "added", "removed", "version", "entry_points", "renamed",
         "flipped", "loose", "symlink", "context", "truncated")
# the same length as the plugin group's name: an in-place rewrite keeps the file's size
OTHER_GROUP = "dihya.generation_nothing"

PROBE = """\
import json, sys
sys.path[1:1] = json.loads(sys.argv[1])["front"]
from dihya.config import AllowEntry, Config
from dihya.gate import pathmemo, verifycache
from dihya.gate.startup import scan_pth
from dihya.registry import build_registry
from pathlib import Path

args = json.loads(sys.argv[1])
config = Config(path=Path(args["config"]), exists=False, hook_timeout_s=5.0,
                allow=tuple(AllowEntry(**e) for e in args["allow"]))
snapshot = build_registry(config)
pth = scan_pth(directories=args["front"])
verifycache.save_shared()
cache = verifycache.shared()
print(json.dumps({
    "verdicts": {r.name: [r.status, r.reason] for r in snapshot.records},
    "pth": [[p.path, p.sha256] for p in pth],
    "stats": dict(pathmemo.STATS),
    "cache": None if cache is None else [str(cache.path), cache.hits, cache.misses],
}))
"""


class Persisted:
    """The site, the early directory, the plugins (role -> entry-point name), the probe."""

    def __init__(self, root: Path, site: PluginSite, early: Path,
                 names: dict[str, str]) -> None:
        self.root, self.site, self.early, self.names = root, site, early, names
        self.xdg = root / "xdg"
        self.probe = root / "probe.py"
        self.probe.write_text(PROBE)
        self.entries = {role: site.entry(name) for role, name in names.items()}

    @property
    def cache_dir(self) -> Path:
        return self.xdg / "dihya"

    def cache_file(self) -> Path:
        """This context's cache file (the probe's `sys.path` is always the same)."""
        files = [p for p in self.cache_dir.glob(f"verified-{os.geteuid()}-*.json")
                 if p.name != self.other_name]
        assert len(files) == 1, files
        return files[0]

    other_name = ""

    def run(self, cache: bool = True, extra_path: tuple[str, ...] = ()) -> dict[str, Any]:
        env = {k: v for k, v in os.environ.items()
               if k not in (verifycache.ENV, "PYTHONPATH")}
        env["XDG_CACHE_HOME"] = str(self.xdg)
        if not cache:
            env[verifycache.ENV] = "off"
        args = {"front": [str(self.early), str(self.site.site), *extra_path],
                "config": str(self.root / "dihya.toml"),
                "allow": [{"name": e.name, "distribution": e.distribution,
                           "version": e.version, "fingerprint": e.fingerprint,
                           "mode": "in-process"} for e in self.entries.values()]}
        out = subprocess.run([sys.executable, str(self.probe), json.dumps(args)], env=env,
                             cwd=self.root, capture_output=True, text=True, check=False)
        assert out.returncode == 0, out.stderr
        result: dict[str, Any] = json.loads(out.stdout)
        return result

    def both(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """A process with the persisted memo, then one without any cache: the same
        verdicts and `.pth` files."""
        cached, fresh = self.run(), self.run(cache=False)
        assert cached["verdicts"] == fresh["verdicts"], {
            n: (v, fresh["verdicts"].get(n)) for n, v in cached["verdicts"].items()
            if v != fresh["verdicts"].get(n)}
        assert cached["pth"] == fresh["pth"]
        return cached, fresh

    def verdict(self, result: dict[str, Any], role: str) -> tuple[str, str | None] | None:
        found = result["verdicts"].get(self.names[role])
        return None if found is None else (found[0], found[1])

    def dist_info(self, role: str) -> Path:
        module = f"dihya_plugin_{self.names[role]}"
        return next(self.site.site.glob(f"{module}-*.dist-info"))


def _answered_from_memo(result: dict[str, Any]) -> bool:
    """Discovery and resolution answered from the memo a previous process persisted."""
    stats = result["stats"]
    return (stats.get("persisted.hit", 0) > 0 and stats.get("resolution.miss", 0) == 0
            and stats.get("discovery.dist.miss", 0) == 0 and stats.get("pth.miss", 0) == 0
            and stats.get("resolution.hit", 0) > 0)


def _warm(state: Persisted) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        result = state.run()
        if _answered_from_memo(result):
            return result
        assert time.monotonic() < deadline, f"never answered from the memo: {result['stats']}"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def persisted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Persisted]:
    root = tmp_path_factory.mktemp("persisted")
    site = PluginSite(root)
    early = root / "early"
    early.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(verifycache.ENV, "off")  # the approvals here: nothing cached in this process
        mp.syspath_prepend(str(site.site))
        names = {role: site.unique(role) for role in ROLES}
        for name in names.values():
            pip_install(sys.executable, str(build_plugin_wheel(site.wheels, name)),
                        target=site.site)
        state = Persisted(root, site, early, names)
    _warm(state)
    yield state


def test_a_fresh_process_uses_the_persisted_memo(persisted: Persisted) -> None:
    _rewarm(persisted)
    cached, fresh = persisted.both()
    assert _answered_from_memo(cached)
    assert cached["stats"]["persisted.loaded"] > 0
    assert cached["cache"][2] == 0  # every distribution answered by the verification cache
    assert "persisted.hit" not in fresh["stats"]
    assert persisted.verdict(cached, "hit") == ("active", None)
    # the file is private, authenticated, of this context, and the key shared by contexts
    path = Path(cached["cache"][0])
    assert path.parent == persisted.cache_dir
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_bytes().startswith(b"dihya-verify-cache-v4 ")
    assert (path.parent / f"verified-{os.geteuid()}.key").stat().st_mode & 0o777 == 0o600


def test_shadowing_module_added_between_processes(persisted: Persisted) -> None:
    shadow = persisted.early / f"dihya_plugin_{persisted.names['shadow']}.py"
    shadow.write_text("raise SystemExit('owned')\n")
    try:
        cached, _fresh = persisted.both()
        assert persisted.verdict(cached, "shadow") == ("refused", "shadowed-module")
        assert cached["stats"]["resolution.miss"] >= 1
    finally:
        shadow.unlink()
    assert persisted.verdict(persisted.both()[0], "shadow") == ("active", None)


def test_pth_added_between_processes(persisted: Persisted) -> None:
    pth = persisted.site.site / f"zz-{persisted.names['pth']}.pth"
    pth.write_text("import os\n")
    try:
        cached, _fresh = persisted.both()
        assert [p for p, _sha in cached["pth"]] == [str(pth)]
        # rewritten with the same size and the mtime put back: another hash
        before = pth.stat()
        pth.write_text("import re\n")
        os.utime(pth, ns=(before.st_atime_ns, before.st_mtime_ns))
        again, _fresh = persisted.both()
        assert again["pth"][0][1] != cached["pth"][0][1]
    finally:
        pth.unlink()
    assert persisted.both()[0]["pth"] == []


def test_dist_info_added_between_processes(persisted: Persisted) -> None:
    name = persisted.names["added"]
    wheel = build_wheel(persisted.root / "added", f"other-{name}", "1.0.0",
                        {f"other_{name}/__init__.py": "X = 1\n"}, {name: f"other_{name}:X"})
    pip_install(sys.executable, str(wheel), target=persisted.site.site)
    try:
        cached, _fresh = persisted.both()
        assert persisted.verdict(cached, "added") == ("refused", "duplicate-name")
    finally:
        for path in persisted.site.site.glob(f"other_{name}*"):
            shutil.rmtree(path)
    assert persisted.verdict(persisted.both()[0], "added") == ("active", None)


def test_dist_info_removed_between_processes(persisted: Persisted) -> None:
    dist_info = persisted.dist_info("removed")
    shutil.rmtree(dist_info)
    cached, _fresh = persisted.both()
    assert persisted.verdict(cached, "removed") is None


def test_metadata_version_edited_between_processes(persisted: Persisted) -> None:
    metadata = persisted.dist_info("version") / "METADATA"
    before = metadata.stat()
    metadata.write_text(metadata.read_text().replace("Version: 1.0.0", "Version: 6.6.6"))
    os.utime(metadata, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert metadata.stat().st_size == before.st_size
    cached, _fresh = persisted.both()
    assert persisted.verdict(cached, "version") == ("refused", "version-mismatch")


def test_entry_points_edited_between_processes(persisted: Persisted) -> None:
    listing = persisted.dist_info("entry_points") / "entry_points.txt"
    before = listing.stat()
    text = listing.read_text()
    group = "dihya.generation_plugins"
    assert group in text and len(group) == len(OTHER_GROUP)
    listing.write_text(text.replace(group, OTHER_GROUP))
    os.utime(listing, ns=(before.st_atime_ns, before.st_mtime_ns))
    cached, _fresh = persisted.both()
    assert persisted.verdict(cached, "entry_points") is None


def test_file_replaced_by_rename_between_processes(persisted: Persisted) -> None:
    module = persisted.site.site / f"dihya_plugin_{persisted.names['renamed']}" / "__init__.py"
    before = module.stat()
    data = module.read_bytes()
    replacement = module.with_name("replacement.tmp")
    replacement.write_bytes(data.replace(b"pass", b"1;1 ", 1) if b"pass" in data
                            else data + b"#")
    os.utime(replacement, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.rename(replacement, module)
    cached, _fresh = persisted.both()
    assert persisted.verdict(cached, "renamed") == ("refused", "fingerprint-mismatch")


# -- the cache file itself ----------------------------------------------------------------


def _ignored(result: dict[str, Any]) -> bool:
    """The process trusted nothing of the file: no memo entry, no verified distribution."""
    return result["stats"].get("persisted.loaded", 0) == 0 and result["cache"][1] == 0


def _changed_plugin(persisted: Persisted, role: str) -> None:
    """A plugin's module changed with its size and mtime kept (the damaged cache must not
    hide it)."""
    module = persisted.site.site / f"dihya_plugin_{persisted.names[role]}" / "__init__.py"
    before = module.stat()
    data = bytearray(module.read_bytes())
    data[-2] = ord("#") if data[-2] != ord("#") else ord(" ")
    module.write_bytes(bytes(data))
    os.utime(module, ns=(before.st_atime_ns, before.st_mtime_ns))


def _rewarm(persisted: Persisted) -> None:
    """A good file again (each attack below starts from one)."""
    deadline = time.monotonic() + 120
    while not _answered_from_memo(persisted.run()):
        assert time.monotonic() < deadline, "the memo was not persisted again"
        time.sleep(0.3)


def test_cache_file_with_a_flipped_byte_is_ignored(persisted: Persisted) -> None:
    _rewarm(persisted)
    path = persisted.cache_file()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    _changed_plugin(persisted, "flipped")
    cached, _fresh = persisted.both()
    assert _ignored(cached)
    assert persisted.verdict(cached, "flipped") == ("refused", "fingerprint-mismatch")


def test_cache_file_readable_by_others_is_ignored(persisted: Persisted) -> None:
    _rewarm(persisted)
    path = persisted.cache_file()
    os.chmod(path, 0o644)
    _changed_plugin(persisted, "loose")
    cached, _fresh = persisted.both()
    assert _ignored(cached)
    assert persisted.verdict(cached, "loose") == ("refused", "fingerprint-mismatch")
    assert path.stat().st_mode & 0o777 == 0o600  # replaced by a private one


def test_cache_file_that_is_a_symlink_is_ignored(persisted: Persisted) -> None:
    _rewarm(persisted)
    path = persisted.cache_file()
    elsewhere = persisted.root / "elsewhere.json"
    shutil.copy2(path, elsewhere)
    os.chmod(elsewhere, 0o600)
    path.unlink()
    path.symlink_to(elsewhere)
    _changed_plugin(persisted, "symlink")
    cached, _fresh = persisted.both()
    assert _ignored(cached)
    assert persisted.verdict(cached, "symlink") == ("refused", "fingerprint-mismatch")
    assert not path.is_symlink()  # replaced by a regular file


def test_cache_file_truncated_is_ignored(persisted: Persisted) -> None:
    _rewarm(persisted)
    path = persisted.cache_file()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    _changed_plugin(persisted, "truncated")
    cached, _fresh = persisted.both()
    assert _ignored(cached)
    assert persisted.verdict(cached, "truncated") == ("refused", "fingerprint-mismatch")


def test_another_contexts_file_copied_in_is_not_used(persisted: Persisted) -> None:
    """A file of another context (another `sys.path`) authenticates with the shared key,
    but its memo is not this context's: ignored; its own file is named differently."""
    _rewarm(persisted)
    other_dir = persisted.root / "other-entry"
    other_dir.mkdir(exist_ok=True)
    ours = persisted.cache_file()
    deadline = time.monotonic() + 120
    while True:  # the other context's process persists a memo of its own
        other = persisted.run(extra_path=(str(other_dir),))
        if _answered_from_memo(other):
            break
        assert time.monotonic() < deadline, other["stats"]
        time.sleep(0.3)
    other_file = Path(other["cache"][0])
    assert other_file != ours and other_file.parent == ours.parent
    Persisted.other_name = other_file.name
    try:
        shutil.copy2(other_file, ours)
        cached, _fresh = persisted.both()
        assert cached["stats"].get("persisted.loaded", 0) == 0
        assert cached["stats"]["resolution.miss"] >= 1
        assert persisted.verdict(cached, "context") == ("active", None)
    finally:
        Persisted.other_name = ""
        other_file.unlink()


def test_old_files_of_other_contexts_are_removed(persisted: Persisted) -> None:
    uid = os.geteuid()
    old = persisted.cache_dir / f"verified-{uid}-0000000000000000.json"
    recent = persisted.cache_dir / f"verified-{uid}-1111111111111111.json"
    for path in (old, recent):
        path.write_bytes(b"x")
        os.chmod(path, 0o600)
    days = 24 * 3600
    os.utime(old, (time.time() - 15 * days, time.time() - 15 * days))
    os.utime(recent, (time.time() - 13 * days, time.time() - 13 * days))
    try:
        # a save happens when something changed: a new plugin shadowed
        shadow = persisted.early / f"dihya_plugin_{persisted.names['hit']}.py"
        shadow.write_text("X = 1\n")
        try:
            persisted.run()
        finally:
            shadow.unlink()
        deadline = time.monotonic() + 120
        while old.exists():
            persisted.run()
            assert time.monotonic() < deadline, "the old context's file was never removed"
            time.sleep(0.3)
        assert recent.exists()
    finally:
        recent.unlink(missing_ok=True)
