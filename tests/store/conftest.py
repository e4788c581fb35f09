"""Store fixtures: every store test runs on a real SQLite file and on the real PostgreSQL.

PostgreSQL is `DIHYA_TEST_POSTGRES_URL` (default: postgres@127.0.0.1:5432/test, trust
auth); each test gets its own schema, dropped afterwards, so runs never interfere.
`DIHYA_TEST_BACKENDS=sqlite|postgres|sqlite,postgres` picks the backends (default both).
An unreachable PostgreSQL skips its tests, except when `CI=true` or
`DIHYA_REQUIRE_POSTGRES=1`: then they fail.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from dihya.store import Store, sqlite_url

PG_URL = os.environ.get("DIHYA_TEST_POSTGRES_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BACKENDS = [b.strip() for b in os.environ.get("DIHYA_TEST_BACKENDS",
                                               "sqlite,postgres").split(",") if b.strip()]


def postgres_required() -> bool:
    return (os.environ.get("CI", "").lower() == "true"
            or os.environ.get("DIHYA_REQUIRE_POSTGRES") == "1")


def _pg_admin() -> sa.Engine:
    engine = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        engine.dispose()
        message = f"PostgreSQL at {PG_URL} is unreachable: {type(exc).__name__}: {exc}"
        if postgres_required():
            pytest.fail(message + " (required: CI=true or DIHYA_REQUIRE_POSTGRES=1)")
        pytest.skip(message)
    return engine


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL whose search_path is a fresh schema of the test database."""
    admin = _pg_admin()
    schema = "dihya_t_" + secrets.token_hex(6)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        sep = "&" if "?" in PG_URL else "?"
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        url: str = request.getfixturevalue("pg_url")
        return url
    return sqlite_url(tmp_path / "dihya.sqlite3")


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    s.ensure_schema()
    yield s
    s.engine.dispose()
