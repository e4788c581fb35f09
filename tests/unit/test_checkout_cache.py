"""The tests' cache of checkout wheels (`support.checkout`): a hit hands out the same wheels,
a changed source gives a new key, and a tampered, truncated, replaced or raced entry is
never handed out."""

from __future__ import annotations

import json
import threading
import zipfile
from pathlib import Path

import pytest

from support.checkout import MANIFEST, checkout_wheels, source_key
from support.wheels import build_wheel


def make_tree(root: Path) -> Path:
    """A checkout in miniature: a core project and one plugin project."""
    (root / "core" / "pkg").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "core"\nversion = "1.0"\n')
    (root / "README.md").write_text("core\n")
    (root / "core" / "pkg" / "__init__.py").write_text("VALUE = 1\n")
    plugin = root / "plugins" / "one"
    (plugin / "src" / "one").mkdir(parents=True)
    (plugin / "pyproject.toml").write_text('[project]\nname = "one"\nversion = "1.0"\n')
    (plugin / "src" / "one" / "__init__.py").write_text("ONE = 1\n")
    return root


class Builder:
    """Real wheels of the miniature projects (their source files inside), counted."""

    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, out: Path, root: Path) -> list[Path]:
        with self.lock:
            self.calls += 1
        out.mkdir(parents=True, exist_ok=True)
        core = {f"pkg/{p.name}": p.read_text() for p in (root / "core" / "pkg").glob("*.py")}
        one_dir = root / "plugins" / "one" / "src" / "one"
        one = {f"one/{p.name}": p.read_text() for p in one_dir.glob("*.py")}
        return [build_wheel(out, "core", "1.0", core, {}, requires=()),
                build_wheel(out, "one", "1.0", one, {}, requires=())]


def contents(wheels: list[Path]) -> dict[str, dict[str, bytes]]:
    """What each wheel holds (a rebuild may differ in the archive's timestamps only)."""
    out = {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            out[wheel.name] = {name: zf.read(name) for name in zf.namelist()}
    return out


def source_in(wheel: Path, member: str) -> str:
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(member).decode()


def test_a_hit_hands_out_the_same_wheels_without_building(tmp_path: Path) -> None:
    root, cache, build = make_tree(tmp_path / "src"), tmp_path / "cache", Builder()
    first = checkout_wheels(tmp_path / "a", cache, root, build)
    second = checkout_wheels(tmp_path / "b", cache, root, build)
    assert build.calls == 1
    assert [w.read_bytes() for w in first] == [w.read_bytes() for w in second]
    assert len(second) == 2
    assert all(w.parent == tmp_path / "b" for w in second)  # copies, not the cache's files


def test_a_changed_or_added_source_file_gives_a_new_build(tmp_path: Path) -> None:
    root, cache, build = make_tree(tmp_path / "src"), tmp_path / "cache", Builder()
    key = source_key(root)
    checkout_wheels(tmp_path / "a", cache, root, build)
    (root / "core" / "pkg" / "__init__.py").write_text("VALUE = 2\n")
    assert source_key(root) != key
    (wheel, _one) = checkout_wheels(tmp_path / "b", cache, root, build)
    assert build.calls == 2 and source_in(wheel, "pkg/__init__.py") == "VALUE = 2\n"
    changed = source_key(root)
    (root / "plugins" / "one" / "src" / "one" / "extra.py").write_text("X = 1\n")
    assert source_key(root) != changed
    (root / "plugins" / "one" / "pyproject.toml").write_text('[project]\nname = "one"\n')
    assert len({key, changed, source_key(root)}) == 3


def test_bytecode_and_build_output_do_not_change_the_key(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "src")
    key = source_key(root)
    (root / "core" / "pkg" / "__pycache__").mkdir()
    (root / "core" / "pkg" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    (root / "core" / "pkg.egg-info").mkdir()
    (root / "core" / "pkg.egg-info" / "PKG-INFO").write_text("x\n")
    (root / "build").mkdir()
    assert source_key(root) == key


@pytest.mark.parametrize("damage", ["append", "truncate", "replace", "delete"])
def test_a_damaged_cached_wheel_is_rebuilt_not_handed_out(tmp_path: Path, damage: str) -> None:
    root, cache, build = make_tree(tmp_path / "src"), tmp_path / "cache", Builder()
    good = contents(checkout_wheels(tmp_path / "a", cache, root, build))
    cached = cache / source_key(root) / "core-1.0-py3-none-any.whl"
    if damage == "append":
        cached.write_bytes(cached.read_bytes() + b"\n# one more line\n")
    elif damage == "truncate":
        cached.write_bytes(cached.read_bytes()[:100])
    elif damage == "replace":  # another valid wheel, another content
        build_wheel(cached.parent, "core", "1.0", {"pkg/__init__.py": "EVIL = 1\n"}, {},
                    requires=())
    else:
        cached.unlink()
    again = checkout_wheels(tmp_path / "b", cache, root, build)
    assert build.calls == 2
    assert contents(again) == good


@pytest.mark.parametrize("manifest", ["", "{", '{"wheels": {}}', '{"wheels": []}',
                                      '{"wheels": {"../core-1.0-py3-none-any.whl": "00"}}'])
def test_a_bad_manifest_means_a_rebuild(tmp_path: Path, manifest: str) -> None:
    root, cache, build = make_tree(tmp_path / "src"), tmp_path / "cache", Builder()
    good = contents(checkout_wheels(tmp_path / "a", cache, root, build))
    (cache / source_key(root) / MANIFEST).write_text(manifest)
    assert contents(checkout_wheels(tmp_path / "b", cache, root, build)) == good
    assert build.calls == 2
    assert not (tmp_path / "core-1.0-py3-none-any.whl").exists()


def test_concurrent_builders_publish_one_entry(tmp_path: Path) -> None:
    root, cache = make_tree(tmp_path / "src"), tmp_path / "cache"
    gate = threading.Barrier(4)

    class Racing(Builder):
        def __call__(self, out: Path, root: Path) -> list[Path]:
            wheels = super().__call__(out, root)
            gate.wait(timeout=60)  # every thread builds before any publishes
            return wheels

    build = Racing()
    results: list[dict[str, dict[str, bytes]]] = []
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            results.append(contents(checkout_wheels(tmp_path / f"out{i}", cache, root, build)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(results) == 4 and build.calls == 4
    assert all(r == results[0] for r in results)
    assert [p.name for p in cache.iterdir()] == [source_key(root)]  # no leftover work dirs
    manifest = json.loads((cache / source_key(root) / MANIFEST).read_text())
    assert sorted(manifest["wheels"]) == sorted(results[0])


def test_without_a_cache_every_call_builds(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DIHYA_TEST_WHEEL_CACHE", raising=False)
    root, build = make_tree(tmp_path / "src"), Builder()
    checkout_wheels(tmp_path / "a", root=root, builder=build)
    checkout_wheels(tmp_path / "b", root=root, builder=build)
    assert build.calls == 2
