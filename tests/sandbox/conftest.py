"""Sandbox tests: make the helpers importable and close every snapshot's workers."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def closing() -> Iterator[Callable[[Any], None]]:
    snapshots: list[Any] = []
    yield snapshots.append
    for snap in snapshots:
        snap.close()
