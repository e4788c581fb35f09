"""The test PostgreSQL: reach it (or skip, or fail when it is mandatory) and hand out a
fresh schema per test, dropped afterwards, so runs never interfere.

PostgreSQL is `DIHYA_TEST_POSTGRES_URL` (default: postgres@127.0.0.1:5432/test, trust
auth). An unreachable server skips the test, except when `CI=true` or
`DIHYA_REQUIRE_POSTGRES=1`: then it fails.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

PG_URL = os.environ.get("DIHYA_TEST_POSTGRES_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def postgres_required() -> bool:
    return (os.environ.get("CI", "").lower() == "true"
            or os.environ.get("DIHYA_REQUIRE_POSTGRES") == "1")


def admin_engine() -> sa.Engine:
    """An autocommit engine on the test database; skips or fails the test if unreachable."""
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


@contextmanager
def fresh_schema_url() -> Iterator[str]:
    """A URL whose search_path is a new schema of the test database, dropped on exit.

    Whoever used the URL must have closed its connections by then (stop servers first).
    """
    admin = admin_engine()
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
