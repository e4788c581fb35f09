"""`directwrite.sqlite_begin_immediate`: the audit append's wait for SQLite's write lock
(tries every 50–500 µs instead of SQLite's busy handler's 1, 2, 5, 10… ms sleeps). Attacks:
a lock held past the deadline must still fail as SQLite's busy timeout fails (not hang,
not take the lock), the connection's own busy timeout must be what it was afterwards
(its other statements keep waiting as configured), and a lock released while waiting is
taken."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from dihya.store.directwrite import sqlite_begin_immediate


def _connect(path: Path, timeout: float = 7.0) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None,
                           check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    return conn


def test_a_lock_held_past_the_deadline_fails_as_busy(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    holder, waiter = _connect(path), _connect(path)
    holder.execute("BEGIN IMMEDIATE")
    cursor = waiter.cursor()
    with pytest.raises(sqlite3.OperationalError) as caught:
        sqlite_begin_immediate(cursor, 0.2)
    assert caught.value.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
    assert not waiter.in_transaction
    # the busy timeout the caller gives is set back on the connection
    assert cursor.execute("PRAGMA busy_timeout").fetchone() == (200,)
    holder.execute("COMMIT")
    sqlite_begin_immediate(cursor, 7.0)
    assert waiter.in_transaction
    assert cursor.execute("PRAGMA busy_timeout").fetchone() == (7000,)
    waiter.execute("ROLLBACK")


def test_a_lock_released_while_waiting_is_taken(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    holder, waiter = _connect(path), _connect(path)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("CREATE TABLE t (x)")
    started = threading.Event()
    outcome: list[BaseException | None] = []

    def wait() -> None:
        started.set()
        try:
            sqlite_begin_immediate(waiter.cursor(), 30.0)
            outcome.append(None)
        except BaseException as exc:  # pragma: no cover - reported below
            outcome.append(exc)

    thread = threading.Thread(target=wait)
    thread.start()
    started.wait(30)
    holder.execute("COMMIT")
    thread.join(60)
    assert outcome == [None]
    assert waiter.in_transaction
    waiter.execute("INSERT INTO t VALUES (1)")  # sees the holder's commit
    waiter.execute("COMMIT")
    assert holder.execute("SELECT x FROM t").fetchall() == [(1,)]


def test_any_other_error_is_raised_at_once(tmp_path: Path) -> None:
    conn = _connect(tmp_path / "s.sqlite3")
    conn.execute("BEGIN")
    with pytest.raises(sqlite3.OperationalError, match="within a transaction"):
        sqlite_begin_immediate(conn.cursor(), 30.0)
