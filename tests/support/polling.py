"""Wait for a condition by polling it, with a generous deadline (tests never sleep a fixed time)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


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
