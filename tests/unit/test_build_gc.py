"""A build pauses the cyclic garbage collector and gives it back as it found it."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

import dihya.registry as registry
from dihya.config import Config
from dihya.registry import build_registry


@pytest.fixture
def collector() -> Iterator[None]:
    was = gc.isenabled()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


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
