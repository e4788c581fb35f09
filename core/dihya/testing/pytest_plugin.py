"""The pytest plugin of `dihya.testing`, registered through dihya-core's `pytest11` entry point.

Active in every pytest run of an environment where dihya-core is installed; it imports
nothing of the core until a fixture is used. Fixtures: `sample_needs` (a fresh copy of the
core's todo example) and `minimal_needs`; the report header names the core version.
"""

from __future__ import annotations

from typing import Any

import pytest


def pytest_report_header(config: pytest.Config) -> str:
    from dihya import __version__
    from dihya.plugin import HOOK_API_VERSION

    return f"dihya-core {__version__}, hook API {HOOK_API_VERSION}"


@pytest.fixture
def sample_needs() -> dict[str, Any]:
    """A fresh copy of the core's todo example needs (two entities, every field type)."""
    from dihya.testing import sample_needs as load

    return load()


@pytest.fixture
def minimal_needs() -> dict[str, Any]:
    """The smallest valid needs: one entity with one field."""
    from dihya.testing import minimal_needs as load

    return load()
