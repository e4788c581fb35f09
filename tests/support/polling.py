"""Wait for a condition by polling it, with a generous deadline (tests never sleep a fixed time)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], Any], what: str, deadline_s: float = 120.0) -> Any:
    """The first truthy value of `condition()`, polled every 50 ms; AssertionError naming
    `what` when `deadline_s` passes first."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {deadline_s} s: {what}")


def until_replayed(build: Callable[[], T], deadline_s: float = 60.0) -> T:
    """What `build()` returned the first time a build was answered by replaying the last
    one (`dihya.gate.replay`: its keys past the racy window), tried every 0.2 s;
    AssertionError when `deadline_s` passes first."""
    from dihya.gate import replay

    deadline = time.monotonic() + deadline_s
    while True:
        hits = replay.STATS["hit"]
        built = build()
        if replay.STATS["hit"] > hits:
            return built
        assert time.monotonic() < deadline, f"never replayed: {replay.STATS}"
        time.sleep(0.2)
