"""A build pauses the cyclic garbage collector and gives it back as it found it; the
objects alive after a process's first build are frozen until the next build that is not a
replay (attacked: garbage made before it is collected after that build, an application's
own freeze and a collector it disabled are left alone)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

import dihya.registry as registry
from dihya.config import Config
from dihya.gate import replay
from dihya.registry import build_registry
from support.polling import until_replayed


@pytest.fixture
def collector() -> Iterator[None]:
    was = gc.isenabled()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


@pytest.fixture
def first_build(collector: None) -> Iterator[None]:
    """This process as if it had not built yet (nothing frozen by a build), and as it was
    after the test: nothing left frozen."""
    saved = list(registry._FROZEN)
    gc.unfreeze()
    registry._FROZEN[:] = [False, False]
    replay.keep(None)
    yield
    gc.unfreeze()
    registry._FROZEN[:] = saved
    replay.keep(None)


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def _garbage() -> weakref.ref[_Cycle]:
    """A weak reference to cyclic garbage (only the collector frees it)."""
    return weakref.ref(_Cycle())


def _config(tmp_path: Path) -> Config:
    return Config(path=tmp_path / "dihya.toml", exists=False)


def test_the_collector_is_paused_during_a_build_and_enabled_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, collector: None) -> None:
    seen: list[bool] = []
    discover = registry.discover

    def watching(*args: object, **kwargs: object) -> object:
        seen.append(gc.isenabled())
        return discover(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(registry, "discover", watching)
    gc.enable()
    build_registry(_config(tmp_path), path=[str(tmp_path)])
    assert seen == [False]
    assert gc.isenabled()


def test_a_failing_build_enables_it_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          collector: None) -> None:
    def failing(*args: object, **kwargs: object) -> object:
        raise RuntimeError("discovery failed")

    monkeypatch.setattr(registry, "discover", failing)
    gc.enable()
    with pytest.raises(RuntimeError, match="discovery failed"):
        build_registry(_config(tmp_path), path=[str(tmp_path)])
    assert gc.isenabled()


def test_a_collector_disabled_by_the_application_stays_disabled(
        tmp_path: Path, collector: None) -> None:
    gc.disable()
    build_registry(_config(tmp_path), path=[str(tmp_path)])
    assert not gc.isenabled()


def test_the_first_build_freezes_and_the_next_full_build_gives_it_back(
        tmp_path: Path, first_build: None) -> None:
    gc.enable()
    gc.collect()
    cycle = _garbage()  # garbage made before the first build
    build_registry(_config(tmp_path), path=[str(tmp_path)])
    assert gc.get_freeze_count() > 0
    gc.collect()
    assert cycle() is not None  # frozen: no collection sees it...
    replay.keep(None)  # ...until the next build that is not a replay
    build_registry(_config(tmp_path), path=[str(tmp_path)])
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert cycle() is None
    # once per process: the garbage of a later build is collected as usual
    build_registry(_config(tmp_path), path=[str(tmp_path)])
    assert gc.get_freeze_count() == 0


def test_a_replayed_rebuild_keeps_the_freeze(tmp_path: Path, first_build: None) -> None:
    gc.enable()
    config, path = _config(tmp_path), [str(tmp_path)]
    until_replayed(lambda: build_registry(config, path=path))
    registry._FROZEN[:] = [False, False]  # as if that had been this process's first build
    for _ in range(2):  # a replayed build freezes as the first, and keeps it
        hits = replay.STATS["hit"]
        build_registry(config, path=path)
        assert replay.STATS["hit"] == hits + 1
        assert gc.get_freeze_count() > 0
    replay.keep(None)
    build_registry(config, path=path)
    assert gc.get_freeze_count() == 0


def test_an_application_that_froze_objects_itself_is_left_alone(
        tmp_path: Path, first_build: None) -> None:
    gc.enable()
    cycle = _garbage()
    gc.freeze()  # the application's (a preloaded server app)
    build_registry(_config(tmp_path), path=[str(tmp_path)])
    assert registry._FROZEN == [False, True]  # nothing frozen by the build
    replay.keep(None)
    build_registry(_config(tmp_path), path=[str(tmp_path)])
    gc.collect()
    assert cycle() is not None  # still the application's frozen object: not given back


def test_a_disabled_collector_is_not_frozen(tmp_path: Path, first_build: None) -> None:
    gc.disable()
    build_registry(_config(tmp_path), path=[str(tmp_path)])
    assert gc.get_freeze_count() == 0
    assert not gc.isenabled()
