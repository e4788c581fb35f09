"""Transactions on the database driver's own connection, for the one write on every
request's path: the audit append (`AuditLog.append_many`, through `Store.raw_locked`).

SQLAlchemy's per-statement work was two thirds of an append on SQLite, and on PostgreSQL
each statement was a network round trip (plus one for the pool's liveness ping and one for
psycopg's own `BEGIN`): eight per event. Here:

- SQLite: `BEGIN IMMEDIATE`, the statements, `COMMIT`, straight on the `sqlite3` cursor.
- PostgreSQL, two round trips: (1) `BEGIN` with the transaction's settings and the
  advisory lock, and the first read (`rows`), in one simple query — its parameters, hex
  digests and ids only, written in as literals (anything else: a round trip of its own);
  (2) every write (`write`), queued and sent in one pipeline with `COMMIT`. Connections
  come from a pool of their own, in autocommit mode (the transaction is begun by hand) and
  without a liveness ping: a dead connection fails the attempt, which the group commit
  retries with a look-up of what did commit (`dihya.audit.writer`). Each statement of a
  simple query gets its own snapshot, so the read sees every commit made before the lock
  was granted.

Statements are written with `:name` placeholders (SQLite's named style) and rewritten once
for psycopg's `%(name)s`.
"""

from __future__ import annotations

import re
from typing import Any, Final

_PG_STYLE: dict[str, str] = {}
_SAFE_SETTING: Final = re.compile(r"^[A-Za-z0-9 :._-]+$")


_HEX: Final = re.compile(r"^[0-9a-f]{1,128}$")
_PLACEHOLDER: Final = re.compile(r":(\w+)")
_BEGIN_STATEMENTS: Final = 4  # BEGIN, two SET LOCAL, the lock


def pg_begin(lock_name: str, synchronous_commit: str, lock_timeout: str) -> str:
    """`BEGIN`, the transaction's settings and its advisory lock, as one simple query
    (no parameters: psycopg then sends several statements in one round trip). The values
    are the store's own constants, checked to be plain words."""
    for value in (lock_name, synchronous_commit, lock_timeout):
        if not _SAFE_SETTING.match(value):  # pragma: no cover - constants of this package
            raise ValueError(f"not a plain setting: {value!r}")
    return (f"BEGIN; SET LOCAL synchronous_commit TO '{synchronous_commit}'; "
            f"SET LOCAL lock_timeout TO '{lock_timeout}'; "
            f"SELECT pg_advisory_xact_lock(hashtext(current_schema() || '{lock_name}'))")


def pg_style(text: str) -> str:
    """`text` with its `:name` placeholders as psycopg's `%(name)s` (rewritten once)."""
    sql = _PG_STYLE.get(text)
    if sql is None:
        sql = _PG_STYLE[text] = re.sub(r":(\w+)", r"%(\1)s", text)
    return sql


def _with_literals(text: str, params: dict[str, Any]) -> str | None:
    """`text` with its placeholders replaced by quoted literals, when every value is a
    lower-case hex string (nothing to escape); else None."""
    if not all(isinstance(v, str) and _HEX.match(v) for v in params.values()):
        return None
    try:
        return _PLACEHOLDER.sub(lambda m: f"'{params[m.group(1)]}'", text)
    except KeyError:
        return None


class RawTransaction:
    """The statements of one `Store.raw_locked` transaction; on PostgreSQL `begin` is
    sent with the first read (or alone, before the first read that cannot join it)."""

    __slots__ = ("_begin", "_cursor", "_queued", "_sqlite")

    def __init__(self, cursor: Any, sqlite: bool, begin: str | None = None) -> None:
        self._cursor = cursor
        self._sqlite = sqlite
        self._begin = begin
        self._queued: list[tuple[str, list[dict[str, Any]]]] = []

    def _begun(self) -> None:
        if self._begin is not None:
            begin, self._begin = self._begin, None
            self._cursor.execute(begin)

    def _sql(self, text: str) -> str:
        return text if self._sqlite else pg_style(text)

    def rows(self, text: str, params: dict[str, Any] | None = None) -> list[Any]:
        """Run a query now; its rows."""
        if self._begin is not None:
            joined = _with_literals(text, params or {})
            if joined is not None:  # one round trip: BEGIN, settings, lock, this query
                begin, self._begin = self._begin, None
                self._cursor.execute(f"{begin}; {joined}")
                for _ in range(_BEGIN_STATEMENTS):
                    self._cursor.nextset()
                return list(self._cursor.fetchall())
            self._begun()
        self._cursor.execute(self._sql(text), params or {})
        return list(self._cursor.fetchall())

    def write(self, text: str, params: list[dict[str, Any]]) -> None:
        """Run a write once per parameter set: now on SQLite, with the commit on
        PostgreSQL (so no read may depend on it)."""
        if not params:
            return
        if self._sqlite:
            self._cursor.executemany(text, params)
        else:
            self._queued.append((self._sql(text), params))

    def commit(self) -> None:
        """The queued writes and `COMMIT` (one pipeline on PostgreSQL)."""
        if self._sqlite:
            self._cursor.execute("COMMIT")
            return
        self._begun()
        with self._cursor.connection.pipeline():
            for sql, params in self._queued:
                self._cursor.executemany(sql, params)
            self._cursor.execute("COMMIT")

    def rollback(self) -> None:
        if self._begin is None:  # nothing was begun otherwise
            self._cursor.execute("ROLLBACK")
