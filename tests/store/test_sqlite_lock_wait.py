"""The SQLite store's kept connection (the request path's reads and its audit append) keeps
a busy timeout of 0 after its first append, instead of setting it to 0 and back around
every `BEGIN IMMEDIATE`. Attacks: its reads must still answer while other processes
write, commit and checkpoint the same file (WAL readers do not wait for writers), an
append must still wait for another process's write lock, and a read that fails on it
must be tried again on a fresh connection, which waits with the engine's timeout."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from pathlib import Path

from dihya.store import SQLITE_BUSY_TIMEOUT_S, Store, sqlite_url


def _append(store: Store, value: str) -> None:
    with store.raw_locked("write") as tx:
        tx.write("INSERT INTO dihya_meta (key, value) VALUES (:k, :v)",
                 [{"k": value, "v": value}])


def _busy_timeout(store: Store) -> int:
    conn = store._kept_connection()
    cursor = conn.cursor()
    try:
        value: int = cursor.execute("PRAGMA busy_timeout").fetchone()[0]
        return value
    finally:
        cursor.close()


def _writer(path: str, name: str, stop: threading.Event, ready: threading.Event) -> None:
    """Another process: appends and commits in a loop, checkpointing (TRUNCATE) often."""
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    count = 0
    while not stop.is_set():
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO dihya_meta (key, value) VALUES (?, ?)",
                     (f"{name}{count}", "x" * 400))
        conn.execute("COMMIT")
        count += 1
        if count % 20 == 0:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        ready.set()
    conn.close()


def test_reads_answer_while_other_processes_write_and_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "dihya.sqlite3"
    store = Store(sqlite_url(path), create=True)
    store.ensure_schema()
    try:
        _append(store, "first")
        assert _busy_timeout(store) == 0  # left at 0 after the append
        ctx = multiprocessing.get_context("spawn")
        stop, ready = ctx.Event(), ctx.Event()
        writers = [ctx.Process(target=_writer, args=(str(path), f"w{i}-", stop, ready))
                   for i in range(2)]
        for writer in writers:
            writer.start()
        try:
            assert ready.wait(60)
            reads = 0
            while reads < 3000:  # each read and append raises if the store was busy
                store.current_state_version()
                reads += 1
                if reads % 100 == 0:
                    _append(store, f"r{reads}")
                    assert _busy_timeout(store) == 0
        finally:
            stop.set()
            for writer in writers:
                writer.join(60)
        assert all(w.exitcode == 0 for w in writers)
    finally:
        store.engine.dispose()


def test_an_append_waits_for_another_process_lock(tmp_path: Path) -> None:
    path = tmp_path / "dihya.sqlite3"
    store = Store(sqlite_url(path), create=True)
    store.ensure_schema()
    try:
        _append(store, "first")
        holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")
        done = threading.Event()
        errors: list[BaseException] = []

        def append() -> None:
            try:
                _append(store, "second")
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
            done.set()

        thread = threading.Thread(target=append)
        thread.start()
        assert store.current_state_version() >= 0  # reads go on while the lock is held
        assert not done.is_set() or errors  # the append cannot finish before the release
        holder.execute("COMMIT")
        thread.join(60)
        assert done.is_set() and errors == []
        assert store.read_row("SELECT value FROM dihya_meta WHERE key = :k", {"k": "second"}) \
            == ("second",)
        holder.close()
    finally:
        store.engine.dispose()


def test_a_failed_read_is_retried_on_a_connection_that_waits(tmp_path: Path) -> None:
    store = Store(sqlite_url(tmp_path / "dihya.sqlite3"), create=True)
    store.ensure_schema()
    try:
        _append(store, "first")
        kept = store._kept_connection()
        assert _busy_timeout(store) == 0
        kept.driver_connection.close()  # the kept connection fails at its next statement
        assert store.current_state_version() >= 0  # read again on a fresh connection
        assert store._kept_connection() is not kept
        assert _busy_timeout(store) == int(SQLITE_BUSY_TIMEOUT_S * 1000)  # SQLite's wait
        _append(store, "second")
        assert _busy_timeout(store) == 0
    finally:
        store.engine.dispose()


def test_the_append_statements_leave_no_setting_behind(tmp_path: Path) -> None:
    """Two appends in a row: the second runs no `PRAGMA` (traced), and commits."""
    store = Store(sqlite_url(tmp_path / "dihya.sqlite3"), create=True)
    store.ensure_schema()
    try:
        _append(store, "first")
        statements: list[str] = []
        store._kept_connection().driver_connection.set_trace_callback(statements.append)
        _append(store, "second")
        assert [s.split()[0] for s in statements] == ["BEGIN", "INSERT", "COMMIT"]
    finally:
        store.engine.dispose()
