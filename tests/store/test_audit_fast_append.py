"""The audit append's fast paths keep every promise: a chain written before them verifies
and grows, concurrent writers of one process (two auditors, many threads) lose nothing and
never fork the chain, and a failed transaction leaves no broken connection behind
(read-only and deleted files: `tests/integration/test_store_faults.py`,
`test_auditqueue.py`)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from dihya.audit import Auditor
from dihya.audit.chain import AuditLog
from dihya.store import Store, audit_table, meta_table
from support import audit_golden

GOLDEN = json.loads((Path(audit_golden.__file__).parent / "audit_golden.json").read_text())


def _store_golden_chain(store: Store) -> None:
    """The golden rows as the core before the fast paths stored them, head included."""
    rows = GOLDEN["rows"]
    with store.begin() as conn:
        conn.execute(audit_table.insert(), rows)
        conn.execute(meta_table.insert().values(key="audit_head",
                                                value=f"{rows[-1]['seq']}:{rows[-1]['hash']}"))


def test_a_chain_written_before_verifies_and_grows(store: Store) -> None:
    _store_golden_chain(store)
    auditor = Auditor(store=store)
    assert auditor.log is not None
    result = auditor.log.verify()
    assert result.ok and result.rows == len(GOLDEN["rows"]), result.problem
    auditor.record("generation", "ok", subject="jane", files=1, note="Jane's note")
    auditor.record("plugin.action", "ok", subject="plügin user", action="é😀", files=2)
    result = auditor.log.verify()
    assert result.ok and result.rows == len(GOLDEN["rows"]) + 2, result.problem
    stored = list(auditor.log.rows())
    assert stored[-1]["action"] == "é😀" and stored[-2]["note"] == "Jane's note"
    # and the old rows read back as the old code stored them
    with store.begin() as conn:
        first = conn.execute(sa.select(audit_table).where(audit_table.c.seq == 1)).one()
    assert first.fields == GOLDEN["rows"][0]["fields"]
    assert first.hash == GOLDEN["rows"][0]["hash"]


def test_two_auditors_and_many_threads_lose_no_event(store: Store) -> None:
    """Two auditors of one store (two group commits, so two transactions can be asked
    for at once) and eight threads: every event once, in each thread's order, one chain."""
    auditors = [Auditor(store=store), Auditor(store=store)]
    threads, per_thread = 8, 30
    start = threading.Barrier(threads)
    failures: list[BaseException] = []

    def client(n: int) -> None:
        auditor = auditors[n % 2]
        start.wait()
        try:
            for i in range(per_thread):
                auditor.record("generation", "ok", subject=f"client-{n}", files=i,
                               note=f"note {n}/{i}" if i % 10 == 0 else None)
        except BaseException as exc:
            failures.append(exc)

    workers = [threading.Thread(target=client, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert failures == []
    log = AuditLog(store)
    result = log.verify()
    assert result.ok, result.problem
    assert result.rows == threads * per_thread
    rows = list(log.rows())
    assert [r["seq"] for r in rows] == list(range(1, threads * per_thread + 1))
    assert len({r["event_id"] for r in rows}) == len(rows)
    for n in range(threads):
        mine = list(log.rows(f"client-{n}"))
        assert [r["files"] for r in mine] == list(range(per_thread))
        assert [r.get("note") for r in mine if r["files"] % 10 == 0] == [
            f"note {n}/{i}" for i in range(0, per_thread, 10)]


def test_a_failed_append_leaves_the_next_one_working(store: Store) -> None:
    """An append refused by the database (a duplicate event id) rolls back; the next
    append, on whatever connection, commits and the chain verifies."""
    from dihya.audit import AuditEvent
    from dihya.audit.chain import Pending

    log = AuditLog(store)
    item = Pending(AuditEvent(type="generation", outcome="ok", at=0.0, event_id="ab" * 16),
                   subject="jane")
    log.append_many([item])
    for _ in range(3):
        with pytest.raises(sa.exc.IntegrityError):
            log.append_many([item])
    auditor = Auditor(store=store)
    for i in range(3):
        auditor.record("generation", "ok", subject="jane", files=i)
    result = log.verify()
    assert result.ok and result.rows == 4, result.problem


TRICKY = ["it's", "back\\slash", "\\'; DROP TABLE dihya_audit; --", "100% :seq %(v)s $1 $$x$$",
          "E'\\x41'", "é😀\u2028\t\r\n", "'' \\\\ '", ""]


def test_values_that_need_quoting_are_stored_as_they_are(store: Store) -> None:
    """On PostgreSQL the writes go as one simple query with their values written in as
    literals (`dihya.store.directwrite.pg_literal`): quotes, backslashes, placeholders
    and any character come back byte for byte, and the chain verifies."""
    auditor = Auditor(store=store)
    assert auditor.log is not None
    for i, text in enumerate(TRICKY):
        auditor.record("plugin.action", "ok", subject=text or "x", target=f"t{text}",
                       action=text, files=-i, duration_ms=0.1 + i, note=text)
    result = auditor.log.verify()
    assert result.ok and result.rows == len(TRICKY), result.problem
    rows = list(auditor.log.rows())
    assert [r["action"] for r in rows] == TRICKY
    assert [r["note"] for r in rows] == TRICKY
    assert [r["files"] for r in rows] == [-i for i in range(len(TRICKY))]
    for text in TRICKY:
        assert [r["action"] for r in auditor.log.rows(text or "x")] == [text]


def test_a_connection_the_server_closed_is_retried(store: Store) -> None:
    """PostgreSQL: the audit's pooled connections killed by the server (a restart, an
    idle timeout) fail one attempt; the group commit retries on a new connection, the
    event is stored once and the chain verifies."""
    if store.is_sqlite:
        pytest.skip("PostgreSQL's connections")
    auditor = Auditor(store=store)
    assert auditor.log is not None
    auditor.record("generation", "ok", subject="jane", files=1)
    with store.raw_locked("audit") as tx:  # the pooled connection the next append takes
        [(pid,)] = tx.rows("SELECT pg_backend_pid()")
    with store.begin() as conn:  # that one only: other tests share the server
        assert conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
    auditor.record("generation", "ok", subject="jane", files=2)
    result = auditor.log.verify()
    assert result.ok and result.rows == 2, result.problem
    assert [r["files"] for r in auditor.log.rows()] == [1, 2]


def test_sqlite_appends_share_the_readers_connection_and_commit(tmp_path: Path) -> None:
    """SQLite: the append runs on the connection the thread keeps for the request path's
    reads (`Store.raw_locked`). Attacks on that: an append must be committed for every
    other connection when it returns (not left open on the kept connection, visible to
    that connection only), and a failed one (a duplicate event id, refused mid-transaction
    while the write lock is held) must release the lock, leave nothing of itself, and
    leave the thread's next read and append working."""
    import sqlite3

    from dihya.audit import AuditEvent
    from dihya.audit.chain import Pending
    from dihya.store import sqlite_url

    path = tmp_path / "dihya.sqlite3"
    store = Store(sqlite_url(path), create=True)
    log = AuditLog(store)
    item = Pending(AuditEvent(type="generation", outcome="ok", at=0.0, event_id="cd" * 16),
                   subject="jane")
    log.append_many([item])
    reads = store.current_state_version()  # the kept connection, as a request reads
    assert reads == 0

    def others_see() -> list[str]:
        other = sqlite3.connect(path, timeout=0.2, isolation_level=None)
        try:
            # the write lock is free: BEGIN IMMEDIATE fails at once ("database is locked")
            # if an append left its transaction open on the kept connection
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            return [r[0] for r in other.execute("SELECT event_id FROM dihya_audit "
                                                "ORDER BY seq")]
        finally:
            other.close()

    assert others_see() == ["cd" * 16]
    with pytest.raises(sa.exc.IntegrityError):
        log.append_many([Pending(AuditEvent(type="generation", outcome="ok", at=0.0,
                                            event_id="ef" * 16)), item])
    assert others_see() == ["cd" * 16]  # the refused batch left nothing, not even "ef"
    assert store.current_state_version() == 0  # the thread's next read works
    Auditor(store=store).record("generation", "ok", subject="jane", files=2)
    assert len(others_see()) == 2
    result = log.verify()
    assert result.ok and result.rows == 2, result.problem
