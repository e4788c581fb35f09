"""Group commit: every record returns committed, concurrent records share transactions,
retries never store an event twice, a failing store fails every waiter with its cause."""

from __future__ import annotations

import json
import logging
import os
import threading
import time

import pytest
import sqlalchemy as sa

from dihya.audit import Auditor
from dihya.audit.chain import AuditLog, Pending
from dihya.audit.writer import GroupCommit
from dihya.store import Store, StoreFault, StoreUnavailable, audit_table


def _log(auditor: Auditor) -> AuditLog:
    assert auditor.log is not None
    return auditor.log


def test_a_record_returns_committed(store: Store, store_url: str) -> None:
    auditor = Auditor(store=store)
    other_process = AuditLog(Store(store_url))  # its own connections: sees commits only
    try:
        for i in range(5):
            auditor.record("generation", "ok", subject="jane", files=i)
            assert [r["files"] for r in other_process.rows()] == list(range(i + 1))
    finally:
        other_process.store.engine.dispose()


def test_concurrent_records_share_transactions_and_keep_one_chain(store: Store) -> None:
    auditor = Auditor(store=store)
    log = _log(auditor)
    per_thread, threads = 40, 8
    start = threading.Barrier(threads)

    def requests(n: int) -> None:
        start.wait()
        for i in range(per_thread):
            auditor.record("generation", "ok", subject=f"client-{n}", files=i)

    workers = [threading.Thread(target=requests, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    result = log.verify()
    assert result.ok, result.problem
    assert result.rows == threads * per_thread
    # concurrent callers were committed together: fewer transactions than events
    assert log.group.transactions < threads * per_thread, log.group.transactions
    rows = list(log.rows())
    assert len({r["event_id"] for r in rows}) == len(rows)
    for n in range(threads):  # each client's events in the order it made them
        mine = [r["files"] for r in log.rows(f"client-{n}")]
        assert mine == list(range(per_thread))


def _pending(n: int) -> list[Pending]:
    auditor_events = []
    for i in range(n):
        from dihya.audit import AuditEvent

        auditor_events.append(Pending(AuditEvent(type="generation", outcome="ok", at=0.0,
                                                 files=i, event_id=os.urandom(16).hex()),
                                      subject="jane", note="Jane's note" if i == 1 else None))
    return auditor_events


def test_a_retried_batch_that_had_committed_is_not_stored_twice(store: Store) -> None:
    log = AuditLog(store)
    items = _pending(3)
    first = log.append_many(items)
    again = log.append_many(items, retry=True)  # the first COMMIT's answer was "lost"
    assert [seq for seq, _ in again] == [seq for seq, _ in first] == [1, 2, 3]
    assert [e.actor for _, e in again] == [e.actor for _, e in first]
    more = log.append_many([*items, *_pending(1)], retry=True)  # one old, one new batch
    assert [seq for seq, _ in more] == [1, 2, 3, 4]
    result = log.verify()
    assert result.ok and result.rows == 4, result.problem
    assert [r.get("note") for r in log.rows()] == [None, "Jane's note", None, None]


def test_the_store_refuses_a_second_row_with_the_same_event_id(store: Store) -> None:
    """A unique index, not a hope: even a writer that skips the look-up cannot."""
    log = AuditLog(store)
    items = _pending(1)
    log.append_many(items)
    with pytest.raises(sa.exc.IntegrityError):
        log.append_many(items)  # no retry look-up: the insert itself is refused
    assert log.verify().rows == 1


def test_a_lost_commit_acknowledgement_is_retried_without_a_duplicate(store: Store) -> None:
    """The first attempt commits, then its connection 'dies' before the answer: the retry
    finds the events and returns them as stored."""
    log = AuditLog(store)
    attempts: list[bool] = []

    def commit_then_lose_the_answer(items: list[Pending], retry: bool) -> list:
        attempts.append(retry)
        written = log.append_many(items, retry)
        if len(attempts) == 1:
            raise StoreUnavailable(StoreFault.CONNECTION_LOST)
        return written

    group = GroupCommit(commit_then_lose_the_answer)
    written = group.commit(_pending(2), timeout=10)
    assert attempts == [False, True]
    assert [seq for seq, _ in written] == [1, 2]
    result = log.verify()
    assert result.ok and result.rows == 2


def test_a_deleted_store_fails_every_waiter_at_once_with_its_cause(store: Store) -> None:
    if not store.is_sqlite:
        pytest.skip("a file to delete: SQLite (PostgreSQL faults: tests/integration)")
    auditor = Auditor(store=store)
    auditor.record("generation", "ok", subject="jane")
    assert store.path is not None
    store.path.unlink()
    errors: list[BaseException] = []

    def request() -> None:
        try:
            auditor.record("generation", "ok", subject="jane")
        except StoreUnavailable as exc:
            errors.append(exc)

    t0 = time.monotonic()
    threads = [threading.Thread(target=request) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - t0 < 3  # no retry on a fault that will not go away
    assert [e.fault for e in errors] == [StoreFault.FILE_DELETED] * 6
    status = _log(auditor).group.status()
    assert status["ok"] is False and status["problem"]["reason"] == "database-file-deleted"


def test_the_log_line_follows_the_commit(store: Store,
                                         caplog: pytest.LogCaptureFixture) -> None:
    auditor = Auditor(store=store)
    with caplog.at_level(logging.INFO, logger="dihya.audit"):
        auditor.record("generation", "ok", subject="jane", needs_bytes=10)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "dihya.audit"]
    stored = list(_log(auditor).rows())
    assert len(lines) == 1 and lines[0]["actor"] == stored[0]["actor"]
    assert lines[0]["at"] == stored[0]["at"]  # the time it was written, as stored
    assert lines[0]["event_id"] == stored[0]["event_id"]


def test_event_ids_are_hashed_with_their_row(store: Store) -> None:
    auditor = Auditor(store=store)
    auditor.record("generation", "ok", subject="jane")
    with store.engine.begin() as conn:
        conn.execute(audit_table.update().values(event_id="0" * 32))
    result = _log(auditor).verify()
    assert not result.ok and result.first_bad == 1
