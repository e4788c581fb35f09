"""The server's deferred audit writer: batches, order, flush on read and on close."""

from __future__ import annotations

import json
import logging
import threading

import pytest

from dihya.audit import Auditor
from dihya.auditqueue import DEFERRED_TYPES
from dihya.store import Store


def test_deferred_events_land_in_order_with_the_synchronous_ones(store: Store) -> None:
    auditor = Auditor(store=store, deferred=True)
    try:
        for i in range(5):
            auditor.record("generation", "ok", subject="jane", files=i)
        auditor.record("plugin.disabled", "ok", subject="ops", plugin="x")  # synchronous
        auditor.record("generation", "ok", subject="jane", files=5)
        rows = list(auditor.log.rows())  # a read flushes the queue first
        assert [(r["type"], r.get("files")) for r in rows] == [
            *[("generation", i) for i in range(5)], ("plugin.disabled", None),
            ("generation", 5)]
        assert rows[0]["actor"] == rows[-1]["actor"] != rows[5]["actor"]
        assert auditor.log.verify().ok
    finally:
        auditor.close()


def test_concurrent_requests_keep_one_unbroken_chain(store: Store) -> None:
    auditor = Auditor(store=store, deferred=True)
    per_thread, threads = 60, 4

    def requests(n: int) -> None:
        for i in range(per_thread):
            auditor.record("generation", "ok", subject=f"client-{n}", files=i)
            if i % 20 == 0:
                auditor.record("token.created", "ok", subject=f"client-{n}")

    workers = [threading.Thread(target=requests, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    try:
        result = auditor.log.verify()
        assert result.ok, result.problem
        assert result.rows == threads * (per_thread + 3)
        rows = list(auditor.log.rows())
        actors = {r["actor"] for r in rows if r["type"] == "generation"}
        assert len(actors) == threads
        for actor in actors:  # each client's own events in the order it made them
            mine = [r["files"] for r in rows if r["type"] == "generation"
                    and r["actor"] == actor]
            assert mine == list(range(per_thread))
    finally:
        auditor.close()


def test_close_writes_what_is_queued_and_later_events_are_written_at_once(
        store: Store, store_url: str) -> None:
    auditor = Auditor(store=store, deferred=True)
    for i in range(50):
        auditor.record("generation", "ok", files=i)
    auditor.close()
    other_process = Auditor(store=Store(store_url))  # reads what is in the store only
    assert [r["files"] for r in other_process.log.rows()] == list(range(50))
    auditor.record("generation", "ok", files=50)  # after close: synchronous, not lost
    assert [r["files"] for r in other_process.log.rows()][-1] == 50
    other_process.log.store.engine.dispose()


def test_the_log_line_follows_the_write(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    auditor = Auditor(store=store, deferred=True)
    try:
        with caplog.at_level(logging.INFO, logger="dihya.audit"):
            auditor.record("generation", "ok", subject="jane", needs_bytes=10)
            auditor.flush()
        lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "dihya.audit"]
        stored = list(auditor.log.rows())
        assert len(lines) == 1 and lines[0]["actor"] == stored[0]["actor"]
        assert lines[0]["at"] == stored[0]["at"]  # the time it was written, as stored
    finally:
        auditor.close()


def test_what_is_deferred() -> None:
    # administration, switches, quarantine and sandbox violations are written at once
    assert {"plugin.disabled", "plugin.enabled", "plugin.quarantined", "token.created",
            "audit.purged", "hook.sandbox-violation"}.isdisjoint(DEFERRED_TYPES)
    assert {"generation", "auth.failed"} <= DEFERRED_TYPES
