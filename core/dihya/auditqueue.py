"""Deferred audit appends: a writer thread that batches a server's request-path events.

One transaction per event (lock, pseudonym, chain head, insert, head update, commit) cost a
quarter of the shortest generation on SQLite and two fifths on PostgreSQL. Under
`dihya serve` the events of the request path (`DEFERRED_TYPES`) are queued instead and
appended by one thread per process, as many as are waiting in one transaction.

What this trades, and how little: an event reaches the store a few milliseconds after the
request that caused it (every read of the log in this process — export, purge, verify —
flushes the queue first; another process may miss the last milliseconds of this one). A
graceful stop (SIGTERM, SIGINT, `close()`, interpreter exit) writes what is queued; a
process killed with SIGKILL loses at most what was queued, and the JSON log line of an
event is written only once the event is in the store, so the two never disagree. When the
store is down the writer keeps the events and retries every second; when the queue is
full (`MAX_QUEUE`), `record` waits for room instead of dropping anything. Events outside
`DEFERRED_TYPES` (administration, switches, quarantine, sandbox violations) are written
synchronously, after the queue, so the chain keeps each process's order.
"""

from __future__ import annotations

import atexit
import collections
import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from dihya.audit import AuditEvent
    from dihya.auditlog import AuditLog, Pending

log = logging.getLogger("dihya.audit.writer")

# request-path and registry-observation events; everything else is written synchronously
DEFERRED_TYPES: Final = frozenset({
    "generation", "plugin.action", "auth.failed", "acl.denied",
    "plugin.discovered", "plugin.refused", "plugin.failed", "registry.reloaded",
})
MAX_BATCH: Final = 500
LINGER_S: Final = 0.02  # how long the first event of a batch waits for company
MAX_QUEUE: Final = 10_000
RETRY_S: Final = 1.0
CLOSE_RETRIES: Final = 10


class AuditWriter:
    """The queue and the thread of one `AuditLog`."""

    def __init__(self, audit_log: AuditLog, on_written: Callable[[AuditEvent], None]) -> None:
        self._log = audit_log
        self._on_written = on_written
        self._queue: collections.deque[Pending] = collections.deque()
        self._cond = threading.Condition()
        self._busy = 0  # events taken from the queue and not yet committed
        self._flushing = 0  # callers waiting in `flush`: no lingering meanwhile
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="dihya-audit-writer",
                                        daemon=True)
        self._thread.start()
        atexit.register(_close_at_exit, weakref.ref(self))

    def submit(self, item: Pending) -> bool:
        """Queue `item`; False once the writer is closed or gone (the caller writes it
        itself)."""
        with self._cond:
            while len(self._queue) >= MAX_QUEUE and not self._closed:
                self._cond.wait(0.1)  # back-pressure: never drop an event
            if self._closed or not self._thread.is_alive():
                return False
            self._queue.append(item)
            self._cond.notify_all()
        return True

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything queued so far is committed; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
            try:
                while self._queue or self._busy:
                    left = deadline - time.monotonic()
                    if left <= 0 or not self._thread.is_alive():
                        return False
                    self._cond.wait(min(left, 0.5))
            finally:
                self._flushing -= 1
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop the thread."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return  # closed and drained
                if not self._closed and not self._flushing and len(self._queue) < MAX_BATCH:
                    # let the events of the next requests join this batch
                    self._cond.wait(LINGER_S)
                batch = [self._queue.popleft()
                         for _ in range(min(MAX_BATCH, len(self._queue)))]
                self._busy = len(batch)
            self._write(batch)
            with self._cond:
                self._busy = 0
                self._cond.notify_all()

    def _write(self, batch: list[Pending]) -> None:
        retries_after_close = 0
        while True:
            try:
                written = self._log.append_many(batch)
            except Exception as exc:  # the store is down: keep the events, try again
                log.error("audit events not written yet, retrying: %s", type(exc).__name__,
                          extra={"reason": "audit-write-failed", "count": len(batch)})
                if self._closed:  # stopping: retry for a while, not for ever
                    retries_after_close += 1
                    if retries_after_close > CLOSE_RETRIES:
                        log.error("audit events lost: the store stayed unreachable while "
                                  "stopping", extra={"reason": "audit-write-failed",
                                                     "count": len(batch)})
                        return
                time.sleep(RETRY_S)
                continue
            for _seq, event in written:
                try:
                    self._on_written(event)
                except Exception:  # a broken log handler must not stop the writer
                    log.exception("cannot log an audit event written to the store")
            return


def _close_at_exit(ref: weakref.ref[AuditWriter]) -> None:
    writer = ref()
    if writer is not None:
        writer.close()
