"""Shared test setup: `tests/support` importable as `support`, and core fixtures."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


def _private_user_cache() -> None:
    """The tests' own user cache: what the core keeps there (verified distributions, kept
    wheels, compiled bytecode, the core wheel for plugin tests) goes to a directory removed
    at the end, never to the user's ~/.cache/dihya. pip keeps its own cache."""
    real = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    os.environ.setdefault("PIP_CACHE_DIR", str(real / "pip"))
    cache = tempfile.mkdtemp(prefix="dihya-test-cache-")
    atexit.register(shutil.rmtree, cache, True)
    os.environ["XDG_CACHE_HOME"] = cache


from support.site import PluginSite  # noqa: E402

_private_user_cache()


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

