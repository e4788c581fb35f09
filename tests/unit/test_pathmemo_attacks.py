"""The import-path memo, attacked further: symbolic links, path entries that appear later
(a directory, a zip file), a path entry swapped by rename, `.pyc`-only modules, case, a
mutated path, two builds at once.

Same set-up as `test_pathmemo.py` (real wheels pip-installed into a private site directory,
an empty directory first on the path, built until the memo answers every part from memory);
each change is made by someone who can write a directory on the path (or a directory a link
there points to) but not the config, and the verdict must be exactly that of a build without
any cache (`DIHYA_VERIFY_CACHE=off`).

Holes these found (fixed): a symbolic link on the path whose target appears or is replaced
changes no directory the memo keyed — a `*.dist-info` link (discovery: a duplicate plugin
name; dependency versions: another version first on the path) and a link bearing a
plugin's module name (resolution: a shadowing module).
"""

from __future__ import annotations

import os
import py_compile
import shutil
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_pathmemo import DEP, Site, _dep_wheel, _warm

from dihya.gate import pathmemo, verifycache
from support.site import PluginSite
from support.wheels import build_plugin_wheel, build_wheel, pip_install, plugin_source

ROLES = ("link_dist", "link_module", "link_package", "link_dep", "later_dir", "later_zip",
         "swapped", "pyc", "pycache", "case", "mutated", "threads", "portion_link",
         "mtime_back", "relative", "namespace")
OWNED = "raise SystemExit('owned')\n"


class AttackSite(Site):
    """`Site` with more path entries before site-packages: `swap` (a directory that gets
    replaced by rename), `later` and `later.zip` (absent until a test creates them)."""

    def __init__(self, site: PluginSite, early: Path, names: dict[str, str],
                 extra: list[str]) -> None:
        super().__init__(site, early, names)
        self.extra = extra

    @property
    def path(self) -> list[str]:
        return [str(self.early), *self.extra, *self.site.path]

    def module(self, role: str) -> str:
        return f"dihya_plugin_{self.names[role]}"


@pytest.fixture(scope="module")
def memo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AttackSite]:
    root = tmp_path_factory.mktemp("pathmemo_attacks")
    site = PluginSite(root)
    early = root / "early"
    early.mkdir()
    (root / "swap").mkdir()
    (root / "targets").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(verifycache.ENV, str(root / "cache" / "verified.json"))
        mp.syspath_prepend(str(site.site))
        names = {role: site.unique(role) for role in ROLES}
        for role, name in names.items():
            requires: tuple[str, ...] = ("dihya-core",)
            if role == "link_dep":
                dep = DEP.format(name)
                requires = ("dihya-core", f"{dep}>=1.0")
                pip_install(sys.executable, str(_dep_wheel(root, dep, "1.0.0")),
                            target=site.site)
            if role == "namespace":  # the plugin's package inside a namespace package
                wheel = build_wheel(site.wheels, f"dihya-ns-{name}", "1.0.0",
                                    {f"dihyans_{name}/plugmod/__init__.py":
                                     plugin_source(name)},
                                    {name: f"dihyans_{name}.plugmod:Plugin"})
                (early / f"dihyans_{name}").mkdir()  # a portion first on the path
            else:
                wheel = build_plugin_wheel(site.wheels, name, requires=requires)
            pip_install(sys.executable, str(wheel), target=site.site)
        state = AttackSite(site, early, names,
                           [str(root / "swap"), str(root / "later"), str(root / "later.zip")])
        _warm(state)
        yield state


def _targets(memo: AttackSite) -> Path:
    return memo.site.root / "targets"


def _settle(memo: AttackSite, *changed: Path) -> None:
    """After a change the test makes before its attack: built until answered from memory
    with every key trusted (the directories changed are past the racy window, so the
    memo relies on their keys alone)."""
    _past_racy_window(memo.early, *changed)
    _warm(memo)
    _warm(memo)


def _past_racy_window(*watched: Path) -> None:
    deadline = time.monotonic() + 60
    while any(time.time_ns() - p.lstat().st_ctime_ns <= verifycache.RACY_NS + 10**8
              for p in watched if os.path.lexists(p)):
        assert time.monotonic() < deadline, "the directories never settled"
        time.sleep(0.1)


def test_dist_info_link_whose_target_appears_is_discovered(memo: AttackSite) -> None:
    """A dangling `*.dist-info` link first on the path: its target created later declares
    the approved plugin's name (no directory on the path changes)."""
    name = memo.names["link_dist"]
    target = _targets(memo) / f"dist-{name}"
    link = memo.early / f"dihya_plugin_evil_{name}-1.0.dist-info"
    link.symlink_to(target, target_is_directory=True)
    try:
        _settle(memo)
        target.mkdir()
        (target / "METADATA").write_text(f"Metadata-Version: 2.1\nName: evil-{name}\n"
                                         "Version: 1.0\n")
        (target / "entry_points.txt").write_text(
            f"[dihya.generation_plugins]\n{name} = evil:Plugin\n")
        assert memo.both("link_dist") == (("refused", "duplicate-name"),) * 2
        shutil.rmtree(target)  # gone again: dangling
        assert memo.both("link_dist") == (("active", None),) * 2
    finally:
        link.unlink()
        shutil.rmtree(target, ignore_errors=True)


def test_dist_info_link_retargeted_elsewhere_is_seen(memo: AttackSite) -> None:
    """The directory a `*.dist-info` link points to is replaced by rename."""
    name = memo.names["link_dist"]
    target = _targets(memo) / f"retarget-{name}"
    target.mkdir()
    (target / "METADATA").write_text(f"Metadata-Version: 2.1\nName: evil2-{name}\n"
                                     "Version: 1.0\n")
    link = memo.early / f"dihya_plugin_evil2_{name}-1.0.dist-info"
    link.symlink_to(target, target_is_directory=True)
    try:
        _settle(memo)
        other = _targets(memo) / f"other-{name}"
        shutil.copytree(target, other)
        (other / "entry_points.txt").write_text(
            f"[dihya.generation_plugins]\n{name} = evil:Plugin\n")
        shutil.rmtree(target)
        other.rename(target)
        assert memo.both("link_dist") == (("refused", "duplicate-name"),) * 2
    finally:
        link.unlink()
        shutil.rmtree(target, ignore_errors=True)


def test_module_link_whose_target_appears_shadows(memo: AttackSite) -> None:
    """A dangling link bearing the plugin's module name first on the path: its target is
    created later (the path entry does not change)."""
    target = _targets(memo) / f"{memo.names['link_module']}.py"
    link = memo.early / f"{memo.module('link_module')}.py"
    link.symlink_to(target)
    try:
        _settle(memo)
        target.write_text(OWNED)
        assert memo.both("link_module") == (("refused", "shadowed-module"),) * 2
        target.unlink()
        assert memo.both("link_module") == (("active", None),) * 2
    finally:
        link.unlink()
        target.unlink(missing_ok=True)


def test_package_link_whose_target_gains_an_init_shadows(memo: AttackSite) -> None:
    """A link first on the path to an empty directory (a namespace portion, which the
    plugin's regular package beats): an `__init__.py` written behind the link."""
    target = _targets(memo) / f"pkg-{memo.names['link_package']}"
    target.mkdir()
    link = memo.early / memo.module("link_package")
    link.symlink_to(target, target_is_directory=True)
    try:
        _settle(memo)
        (target / "__init__.py").write_text(OWNED)
        assert memo.both("link_package") == (("refused", "shadowed-module"),) * 2
        (target / "__init__.py").unlink()
        assert memo.both("link_package") == (("active", None),) * 2
        # the link pointed elsewhere: replaced by rename in its directory
        other = _targets(memo) / f"pkg2-{memo.names['link_package']}"
        other.mkdir()
        (other / "__init__.py").write_text(OWNED)
        _settle_link = memo.early / "tmp-link"
        _settle_link.symlink_to(other, target_is_directory=True)
        _settle_link.rename(link)
        assert memo.both("link_package") == (("refused", "shadowed-module"),) * 2
    finally:
        link.unlink()
        shutil.rmtree(target, ignore_errors=True)
        shutil.rmtree(_targets(memo) / f"pkg2-{memo.names['link_package']}",
                      ignore_errors=True)
    assert memo.both("link_package") == (("active", None),) * 2


def test_submodule_link_in_the_package_whose_target_appears(memo: AttackSite) -> None:
    """A dangling link in a namespace portion first on the path: the plugin's package is
    found there once `__init__.py` behind the link exists."""
    portion = memo.early / memo.module("portion_link")
    portion.mkdir()
    target = _targets(memo) / f"init-{memo.names['portion_link']}.py"
    (portion / "__init__.py").symlink_to(target)
    try:
        _settle(memo)
        target.write_text(OWNED)
        assert memo.both("portion_link") == (("refused", "shadowed-module"),) * 2
    finally:
        shutil.rmtree(portion)
        target.unlink(missing_ok=True)
    assert memo.both("portion_link") == (("active", None),) * 2


def test_dependency_link_whose_target_is_replaced_changes_the_version(
        memo: AttackSite) -> None:
    """A `*.dist-info` link of a dependency first on the path (a dangling one already fails
    the check: no version): the directory it points to is replaced by rename with an older
    version."""
    dep = DEP.format(memo.names["link_dep"])
    target = _targets(memo) / f"dep-{dep}"
    link = memo.early / f"{dep.replace('-', '_')}-1.5.dist-info"
    link.symlink_to(target, target_is_directory=True)
    target.mkdir()
    (target / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dep}\nVersion: 1.5\n")
    try:
        _settle(memo)
        older = _targets(memo) / f"older-{dep}"
        older.mkdir()
        (older / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dep}\n"
                                        "Version: 0.1\n")
        shutil.rmtree(target)
        older.rename(target)
        assert memo.both("link_dep") == (("failed", "missing-dependency"),) * 2
    finally:
        link.unlink()
        shutil.rmtree(target, ignore_errors=True)
    assert memo.both("link_dep") == (("active", None),) * 2


def test_namespace_package_portion_first_on_the_path(memo: AttackSite) -> None:
    """The plugin lives in a namespace package; an empty portion of it comes first on the
    path: a module of the plugin's name, or an `__init__.py`, written in that portion."""
    portion = memo.early / f"dihyans_{memo.names['namespace']}"
    assert memo.both("namespace") == (("active", None),) * 2
    for name in ("plugmod.py", "__init__.py"):
        (portion / name).write_text(OWNED)
        try:
            assert memo.both("namespace") == (("refused", "shadowed-module"),) * 2
        finally:
            (portion / name).unlink()
        assert memo.both("namespace") == (("active", None),) * 2


def test_path_entry_directory_that_appears_later(memo: AttackSite) -> None:
    later = Path(memo.extra[1])
    later.mkdir()
    try:
        (later / f"{memo.module('later_dir')}.py").write_text(OWNED)
        assert memo.both("later_dir") == (("refused", "shadowed-module"),) * 2
    finally:
        shutil.rmtree(later)
    assert memo.both("later_dir") == (("active", None),) * 2


def test_zip_file_that_appears_later_on_the_path(memo: AttackSite) -> None:
    archive = Path(memo.extra[2])
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(f"{memo.module('later_zip')}/__init__.py", OWNED)
    try:
        assert memo.both("later_zip") == (("refused", "shadowed-module"),) * 2
    finally:
        archive.unlink()
        sys.path_importer_cache.pop(str(archive), None)  # as a new process would see it
    assert memo.both("later_zip") == (("active", None),) * 2


def test_path_entry_swapped_by_rename(memo: AttackSite) -> None:
    swap = Path(memo.extra[0])
    prepared = swap.with_name("swap-new")
    prepared.mkdir()
    (prepared / f"{memo.module('swapped')}.py").write_text(OWNED)
    old = swap.with_name("swap-old")
    swap.rename(old)
    prepared.rename(swap)
    try:
        assert memo.both("swapped") == (("refused", "shadowed-module"),) * 2
    finally:
        shutil.rmtree(swap)
        old.rename(swap)
    assert memo.both("swapped") == (("active", None),) * 2


def test_pyc_only_module_shadows_and_pycache_alone_does_not(memo: AttackSite) -> None:
    source = _targets(memo) / "owned.py"
    source.write_text(OWNED)
    cache = memo.early / "__pycache__"
    compiled = cache / f"{memo.module('pycache')}.cpython-{sys.version_info[0]}" \
                       f"{sys.version_info[1]}.pyc"
    cache.mkdir(exist_ok=True)
    py_compile.compile(str(source), cfile=str(compiled))
    try:
        # a `__pycache__` entry without its source is never imported
        assert memo.both("pycache") == (("active", None),) * 2
        pyc = memo.early / f"{memo.module('pyc')}.pyc"
        py_compile.compile(str(source), cfile=str(pyc))
        try:
            assert memo.both("pyc") == (("refused", "shadowed-module"),) * 2
        finally:
            pyc.unlink()
        assert memo.both("pyc") == (("active", None),) * 2
    finally:
        shutil.rmtree(cache)


def test_module_added_with_the_directory_mtime_put_back(memo: AttackSite) -> None:
    """The path entry's mtime restored after a shadowing module is added (the import
    system's own directory cache is keyed on the mtime; the memo on the ctime too)."""
    before = memo.early.stat()
    module = memo.early / f"{memo.module('mtime_back')}.py"
    module.write_text(OWNED)
    os.utime(memo.early, ns=(before.st_atime_ns, before.st_mtime_ns))
    try:
        assert memo.both("mtime_back") == (("refused", "shadowed-module"),) * 2
    finally:
        module.unlink()
    assert memo.both("mtime_back") == (("active", None),) * 2


def test_relative_path_entry_after_a_change_of_directory(
        memo: AttackSite, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative path entry means another directory once the current directory changes:
    one of them holds a shadowing module."""
    memo.verdicts()  # warm before the change of directory
    clean, dirty = memo.site.root / "cwd-clean", memo.site.root / "cwd-dirty"
    (clean / "rel").mkdir(parents=True)
    (dirty / "rel").mkdir(parents=True)
    (dirty / "rel" / f"{memo.module('relative')}.py").write_text(OWNED)
    memo.extra.insert(0, "rel")
    try:
        monkeypatch.chdir(clean)
        _past_racy_window(clean / "rel", dirty / "rel")
        # (resolution is not remembered with a relative entry: `importlib.invalidate_caches`
        # drops its finder at each discovery; discovery and versions are, per directory)
        assert memo.both("relative") == (("active", None),) * 2
        assert memo.both("relative") == (("active", None),) * 2
        monkeypatch.chdir(dirty)
        assert memo.both("relative") == (("refused", "shadowed-module"),) * 2
        monkeypatch.chdir(clean)
        assert memo.both("relative") == (("active", None),) * 2
    finally:
        memo.extra.remove("rel")
        monkeypatch.undo()


def test_other_case_of_the_module_name(memo: AttackSite) -> None:
    module = memo.early / f"{memo.module('case').upper()}.py"
    module.write_text(OWNED)
    try:
        verdict = memo.both("case")
        assert verdict[0] == verdict[1]
        if os.path.exists(memo.early / f"{memo.module('case')}.py"):  # case-insensitive fs
            assert verdict[0] == ("refused", "shadowed-module")
        else:
            assert verdict[0] == ("active", None)
    finally:
        module.unlink()


def test_path_mutated_between_builds(memo: AttackSite) -> None:
    """An in-process plugin inserts a directory in the path it shares with the gate."""
    inserted = memo.site.root / "inserted"
    inserted.mkdir()
    (inserted / f"{memo.module('mutated')}.py").write_text(OWNED)
    try:
        memo.extra.insert(0, str(inserted))
        assert memo.both("mutated") == (("refused", "shadowed-module"),) * 2
    finally:
        memo.extra.remove(str(inserted))
        shutil.rmtree(inserted)
    assert memo.both("mutated") == (("active", None),) * 2


def test_two_builds_at_once_agree_with_no_cache(memo: AttackSite) -> None:
    module = memo.early / f"{memo.module('threads')}.py"

    def at_once() -> list[dict[str, tuple[str, str | None] | None]]:
        results: list[dict[str, tuple[str, str | None] | None]] = []
        errors: list[BaseException] = []

        def run() -> None:
            try:
                results.append(memo.verdicts())
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        return results

    fresh = memo.verdicts_without_cache()
    assert all(r == fresh for r in at_once())
    module.write_text(OWNED)
    try:
        fresh = memo.verdicts_without_cache()
        assert fresh["threads"] == ("refused", "shadowed-module")
        assert all(r == fresh for r in at_once())
    finally:
        module.unlink()
    assert all(r == memo.verdicts_without_cache() for r in at_once())


def test_a_build_interrupted_by_an_exception_leaves_nothing_half_remembered(
        memo: AttackSite) -> None:
    """A path hook that raises an unexpected error stops a build part way (with and without
    the memo alike): once it is gone, the next builds' verdicts are those of a build
    without cache, before and after a change."""
    bad = str(memo.site.root / "raising")

    def hook(entry: str) -> object:
        if entry == bad:
            raise RuntimeError("interrupted")
        raise ImportError(entry)

    sys.path_hooks.insert(0, hook)
    memo.extra.insert(0, bad)
    try:
        with pytest.raises(RuntimeError, match="interrupted"):
            memo.verdicts()
        with pytest.raises(RuntimeError, match="interrupted"):
            memo.verdicts_without_cache()
        # the interrupted build's directory gets a shadowing module meanwhile
        (memo.early / f"{memo.module('threads')}.py").write_text(OWNED)
    finally:
        memo.extra.remove(bad)
        sys.path_hooks.remove(hook)
        sys.path_importer_cache.pop(bad, None)
    try:
        assert memo.both("threads") == (("refused", "shadowed-module"),) * 2
    finally:
        (memo.early / f"{memo.module('threads')}.py").unlink()
    assert memo.both("threads") == (("active", None),) * 2


def test_a_clock_set_back_remembers_nothing(tmp_path: Path) -> None:
    """Files written before the clock was set back an hour look newer than the build: not
    settled, so nothing is remembered and every build computes again."""
    directory = tmp_path / "entry"
    directory.mkdir()
    checks = pathmemo.checks([str(directory)])
    set_back = time.time_ns() - 3600 * 10**9
    assert not pathmemo.settled(checks, set_back)
    key = ("attack", str(directory))
    pathmemo.remember("attack", key, checks, set_back, "old answer")
    assert pathmemo.recall("attack", key) == (False, None)


def test_a_slower_build_does_not_put_its_value_under_newer_checks(tmp_path: Path) -> None:
    """Two builds at once: one recalled a result and goes to refresh it while the other,
    having seen a change, remembered another result with other checks. The refresh must
    not pair the first build's (older) value with the second's checks."""
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    old_dir.mkdir()
    new_dir.mkdir()
    later = time.time_ns() + 10 * 10**9  # both keys settled relative to this
    key = ("attack-replace", str(tmp_path))
    pathmemo.remember("attack", key, pathmemo.checks([str(old_dir)]), later, "old answer")
    hit, recalled = pathmemo.recall("attack", key)
    assert hit and recalled == "old answer"
    # the other build remembers its own result, keyed on another directory
    pathmemo.remember("attack", key, pathmemo.checks([str(new_dir)]), later, "new answer")
    pathmemo.replace("attack", key, recalled, "old answer, refreshed")
    assert pathmemo.recall("attack", key) == (True, "new answer")
    # with nobody in between, the refresh applies
    pathmemo.replace("attack", key, "new answer", "new answer, refreshed")
    assert pathmemo.recall("attack", key) == (True, "new answer, refreshed")


def test_real_sys_path_mutated_by_code_in_the_process(
        memo: AttackSite, monkeypatch: pytest.MonkeyPatch) -> None:
    """Builds on the real `sys.path` (no explicit path): code running in the process (an
    in-process plugin at import time) puts a directory holding a shadowing module first."""
    from dihya.registry import build_registry

    def verdict() -> tuple[object, ...]:
        record = build_registry(memo.config()).get(memo.names["mutated"])
        return (record.status, record.reason) if record is not None else ()

    def without_cache() -> tuple[object, ...]:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(verifycache.ENV, "off")
            return verdict()

    inserted = memo.site.root / "inserted-real"
    inserted.mkdir()
    (inserted / f"{memo.module('mutated')}.py").write_text(OWNED)
    _past_racy_window(inserted)
    assert verdict() == verdict() == without_cache() == ("active", None)
    monkeypatch.syspath_prepend(str(inserted))
    assert (verdict(), without_cache()) == (("refused", "shadowed-module"),) * 2
    monkeypatch.undo()
    assert (verdict(), without_cache()) == (("active", None),) * 2
