"""Transactions on the database driver's own connection, for the one write on every
request's path: the audit append (`AuditLog.append_many`, through `Store.raw_locked`).

SQLAlchemy's per-statement work was two thirds of an append on SQLite, and on PostgreSQL
each statement was a network round trip (plus one for the pool's liveness ping and one for
psycopg's own `BEGIN`): eight per event. Here:

- SQLite: `BEGIN IMMEDIATE` (waiting for the write lock by short tries,
  `sqlite_begin_immediate`), the statements, `COMMIT`, straight on the `sqlite3`
  cursor of the connection the thread keeps for the request path's reads.
- PostgreSQL, two round trips: (1) `BEGIN` with the transaction's settings and the
  advisory lock, and the first read (`rows`), in one simple query — its parameters, hex
  digests and ids only, written in as literals (anything else: a round trip of its own);
  (2) every write (`write`), queued and sent with `COMMIT` as one simple query, its values
  written in as quoted literals (`pg_literal`; psycopg's pipeline, which did the same in
  one round trip with bound parameters, was most of an event's CPU). Both are sent with
  libpq's `PQexec` (`pg_exec`), which waits for the answer in C without the GIL; the
  rows are loaded by psycopg's own loaders. Connections
  come from a pool of their own, in autocommit mode (the transaction is begun by hand) and
  without a liveness ping: a dead connection fails the attempt, which the group commit
  retries with a look-up of what did commit (`dihya.audit.writer`). Each statement of a
  simple query gets its own snapshot, so the read sees every commit made before the lock
  was granted.

Statements are written with `:name` placeholders (SQLite's named style) and rewritten once
for psycopg's `%(name)s`.
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
import sqlite3
import time
from typing import Any, Final

_PG_STYLE: dict[str, str] = {}
_SAFE_SETTING: Final = re.compile(r"^[A-Za-z0-9 :._-]+$")


_HEX: Final = re.compile(r"^[0-9a-f]{1,128}$")
_PLACEHOLDER: Final = re.compile(r":(\w+)")


#: SQLite's result code for a lock held by another connection (the low byte of the
#: extended codes `SQLITE_BUSY_RECOVERY`, `SQLITE_BUSY_SNAPSHOT`...)
_SQLITE_BUSY: Final = 5
#: Waits between two tries of `BEGIN IMMEDIATE` while another process holds the lock:
#: the first, then doubled up to the last
_BEGIN_FIRST_WAIT_S: Final = 0.00005
_BEGIN_LONGEST_WAIT_S: Final = 0.0005


def sqlite_begin_immediate(cursor: Any, timeout_s: float, *, keep_no_wait: bool = False
                           ) -> None:
    """`BEGIN IMMEDIATE` on a `sqlite3` cursor, waiting at most `timeout_s` for the write
    lock, then raising SQLite's own "database is locked" error, as the connection's busy
    timeout does.

    SQLite's busy handler sleeps 1, 2, 5, 10, 15, 20, 25… ms between its tries, so a
    writer that finds the lock held for the ≈ 0.3 ms of another process's append (a
    second server worker) slept at least 1 ms, often 3–13: with two workers a quarter of
    the appends waited over 1 ms, and neither worker used the time. Here the connection's
    busy timeout is 0 during `BEGIN IMMEDIATE`, and the lock is tried again after 50 µs,
    then doubling to at most 0.5 ms, until the deadline; then the timeout is set back.

    `keep_no_wait`: the connection's busy timeout is 0 already and stays 0 (the store's
    kept connection, see `Store._read_row`): neither `PRAGMA` is run."""
    deadline = time.monotonic() + timeout_s
    restore = None if keep_no_wait else f"PRAGMA busy_timeout = {int(timeout_s * 1000)}"
    if restore is not None:
        cursor.execute("PRAGMA busy_timeout = 0")
    wait = _BEGIN_FIRST_WAIT_S
    while True:
        try:
            cursor.execute("BEGIN IMMEDIATE")
            break
        except sqlite3.OperationalError as exc:
            code = getattr(exc, "sqlite_errorcode", None)
            if code is None or code & 0xFF != _SQLITE_BUSY or \
                    time.monotonic() + wait > deadline:
                # the timeout set back if the connection still can: the error raised is
                # SQLite's own (what the store's fault classification reads), not this
                if restore is not None:
                    with contextlib.suppress(sqlite3.Error):
                        cursor.execute(restore)
                raise
        time.sleep(wait)
        wait = min(2 * wait, _BEGIN_LONGEST_WAIT_S)
    if restore is not None:
        cursor.execute(restore)


@functools.lru_cache(maxsize=64)
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


def pg_literal(value: Any, conn: Any) -> str:
    """`value` as a PostgreSQL literal, for a simple query (no bound parameters).

    Strings: quotes doubled, and when there is a backslash the escape-string form with
    backslashes doubled too — each form reads back as the same text whatever
    `standard_conforming_strings` is. A NUL (which no PostgreSQL text holds) and any
    type but `None`, `bool`, `int`, `str` and a finite `float` are quoted by psycopg's
    own adapters (`psycopg.sql.Literal`), which refuse what cannot be stored as
    psycopg would refuse the same value as a parameter."""
    kind = type(value)
    if kind is str and "\x00" not in value:
        text: str = value
        if "\\" in text:
            return "E'" + text.replace("\\", "\\\\").replace("'", "''") + "'"
        return "'" + text.replace("'", "''") + "'"
    if value is None:
        return "NULL"
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return int.__repr__(value)
    if kind is float and math.isfinite(value):
        # the shortest text that reads back as this double (`float8in` rounds correctly)
        return "'" + float.__repr__(value) + "'::float8"
    return _psycopg_literal(value, conn)


def _psycopg_literal(value: Any, conn: Any) -> str:
    from psycopg import sql  # rare: not imported by a SQLite store's process

    return sql.Literal(value).as_string(conn)


def pg_statement(text: str, params: dict[str, Any], conn: Any) -> str:
    """`text` (`:name` placeholders) with its parameters written in as literals: by
    `pg_literal` when the connection's client encoding is UTF-8 (what the quoting is
    written for), else every value by psycopg's own `sql.Literal`."""
    quote = pg_literal if conn is None or conn.info.encoding == "utf-8" else _psycopg_literal
    parts = _SPLIT.get(text)
    if parts is None:  # the text between placeholders, then their names: split once
        pieces = _PLACEHOLDER.split(text)
        parts = _SPLIT[text] = (pieces[0::2], pieces[1::2])
    texts, names = parts
    out = [texts[0]]
    for name, after in zip(names, texts[1:], strict=True):
        out.append(quote(params[name], conn))
        out.append(after)
    return "".join(out)


_SPLIT: dict[str, tuple[list[str], list[str]]] = {}


def pg_exec(conn: Any, query: str) -> Any:
    """Run `query` (one or more statements, no parameters) on psycopg connection `conn` in
    one round trip with libpq's `PQexec`, which waits in C without the GIL; the result
    of its last statement. psycopg's own `execute` wakes and runs Python for every
    statement's result as it arrives: most of the client's CPU for a commit that waits on
    the server's WAL flush. An error is raised as psycopg raises it: the statement's error
    class from its SQLSTATE, or `OperationalError` when the connection failed."""
    import psycopg
    from psycopg import pq

    encoding = conn.info.encoding
    result = conn.pgconn.exec_(query.encode(encoding))
    if result.status in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
        return result
    if conn.pgconn.status != pq.ConnStatus.OK or not result.error_field(
            pq.DiagnosticField.SQLSTATE):
        raise psycopg.OperationalError(result.get_error_message(encoding) or
                                       "the connection to the server failed")
    raise psycopg.errors.error_from_result(result, encoding=encoding)


def pg_rows(conn: Any, query: str) -> list[tuple[Any, ...]]:
    """The rows of `query`'s last statement (`pg_exec`), loaded as psycopg loads a
    cursor's (its `Transformer`: the same Python values for every column type)."""
    from psycopg.adapt import Transformer

    result = pg_exec(conn, query)
    loader = Transformer(conn)
    loader.set_pgresult(result)
    return loader.load_rows(0, result.ntuples, tuple)


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
                return pg_rows(self._cursor.connection, f"{begin}; {joined}")
            self._begun()
        self._cursor.execute(self._sql(text), params or {})
        return list(self._cursor.fetchall())

    def write(self, text: str, params: list[dict[str, Any]]) -> None:
        """Run a write once per parameter set: now on SQLite, with the commit on
        PostgreSQL (so no read may depend on it)."""
        if not params:
            return
        if self._sqlite:
            if len(params) == 1:  # an event alone: `executemany`'s iterator not needed
                self._cursor.execute(text, params[0])
            else:
                self._cursor.executemany(text, params)
        else:
            self._queued.append((text, params))

    def commit(self) -> None:
        """The queued writes and `COMMIT`: on PostgreSQL one simple query, one round trip
        (the server runs its statements in order and stops at the first error, so no
        `COMMIT` follows a failed write; the transaction is then rolled back)."""
        if self._sqlite:
            self._cursor.execute("COMMIT")
            return
        self._begun()
        conn = self._cursor.connection
        statements = [pg_statement(text, p, conn)
                      for text, params in self._queued for p in params]
        statements.append("COMMIT")
        pg_exec(conn, "; ".join(statements))

    def rollback(self) -> None:
        if self._begin is None:  # nothing was begun otherwise
            self._cursor.execute("ROLLBACK")
