"""Shared test setup: `tests/support` importable as `support`, and core fixtures."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from support.site import PluginSite


@pytest.fixture
def plugin_site(tmp_path: Path) -> Iterator[PluginSite]:
    site = PluginSite(tmp_path)
    sys.path.insert(0, str(site.site))
    try:
        yield site
    finally:
        sys.path.remove(str(site.site))


@pytest.fixture
def needs() -> dict:
    return {
        "project": "shop",
        "stack": "flask-api",
        "entities": [{"name": "Item", "fields": [{"name": "label", "type": "string"}]}],
    }

