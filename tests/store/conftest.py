"""Store fixtures: every store test runs on a real SQLite file and on the real PostgreSQL.

PostgreSQL is `DIHYA_TEST_POSTGRES_URL` (default: postgres@127.0.0.1:5432/test, trust
auth); each test gets its own schema, dropped afterwards, so runs never interfere
(`support.postgres`, shared with the integration tests).
`DIHYA_TEST_BACKENDS=sqlite|postgres|sqlite,postgres` picks the backends (default both).
An unreachable PostgreSQL skips its tests, except when `CI=true` or
`DIHYA_REQUIRE_POSTGRES=1`: then they fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dihya.store import Store, sqlite_url
from support.postgres import fresh_schema_url

BACKENDS = [b.strip() for b in os.environ.get("DIHYA_TEST_BACKENDS",
                                               "sqlite,postgres").split(",") if b.strip()]


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL whose search_path is a fresh schema of the test database."""
    with fresh_schema_url() as url:
        yield url


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        url: str = request.getfixturevalue("pg_url")
        return url
    return sqlite_url(tmp_path / "dihya.sqlite3")


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url, create=True)
    s.ensure_schema()
    yield s
    s.engine.dispose()
