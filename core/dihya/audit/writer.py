"""Group commit of audit events: an answer waits for its own event's commit, and the threads
of a process that record at the same time share one transaction.

No request is answered before its audit event is committed (`AuditLog.commit` returns only
then). So that durability does not cost one transaction per event under concurrency, the
events of concurrent callers are committed together: the first caller to find no commit
in progress leads — it takes everything queued (up to `MAX_BATCH`) and appends it in one
transaction — while the others wait for the batch that holds their events. A caller alone
commits its own event at once, in its own thread: no hand-off to another thread, no
lingering for company.

Retries never duplicate. A batch whose transaction failed in a way that may be transient
(a lost connection, a refused one, a timeout, a busy lock) is retried with backoff, until
the callers' deadline (`COMMIT_TIMEOUT_S`) when the commit's outcome is unknown, for a
second otherwise; every retry first looks up the batch's event
ids (`AuditLog.append_many(retry=True)`): events that an earlier attempt did commit — its
COMMIT acknowledgement was lost — are not appended again, and the unique index on
`event_id` refuses any that would be. A batch that fails for good (read-only store, full
disk, deleted file) fails at once. Either way each waiting caller gets `StoreUnavailable`
naming the cause, and the web layer answers 503 with `Retry-After`. The outcome of an
attempt can be unknown (the connection died during COMMIT): when that attempt was the last
one, the caller answers 503 although its event may be stored — the log may hold an event
for a request that failed, never lack one for a request that succeeded.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from dihya.store.faults import StoreFault, StoreUnavailable

if TYPE_CHECKING:
    from dihya.audit import AuditEvent
    from dihya.audit.chain import Pending

COMMIT_TIMEOUT_S: Final = 5.0  # how long a caller may wait for its commit, retries included
MAX_BATCH: Final = 500
MAX_PENDING: Final = 10_000  # events waiting beyond this: refused at once (503), not queued
STUCK_S: Final = 5.0  # a commit running this long makes /readyz fail
RECENT_FAILURE_S: Final = 10.0  # a failed commit not followed by a success fails /readyz
FIRST_BACKOFF_S: Final = 0.05
MAX_BACKOFF_S: Final = 1.0
# a connection lost or timed out mid-commit is retried until the deadline (the commit may
# have happened: the retry finds out); a refused connection or a busy store only this long,
# so that a client of a server that is down gets its 503 quickly
SHORT_RETRY_S: Final = 1.0

Written = list[tuple[int, "AuditEvent"]]
WriteBatch = Callable[[list["Pending"], bool], Written]


class _Ticket:
    __slots__ = ("deadline", "done", "error", "item", "result", "taken")

    def __init__(self, item: Pending, deadline: float) -> None:
        self.item = item
        self.deadline = deadline
        self.taken = False  # in a batch being written
        self.done = False
        self.result: tuple[int, AuditEvent] | None = None
        self.error: BaseException | None = None


class GroupCommit:
    """The queue and the commit leadership of one `AuditLog` (one per process)."""

    def __init__(self, write: WriteBatch) -> None:
        self._write = write
        self._cond = threading.Condition()
        self._queue: collections.deque[_Ticket] = collections.deque()
        self._leading = False
        self._batch_started: float | None = None
        self._batch_size = 0
        self._last_success: float | None = None
        self._last_failure: float | None = None
        self._last_fault: StoreFault | None = None
        self.transactions = 0  # committed batches, for tests and benchmarks

    def commit(self, items: Sequence[Pending],
               timeout: float = COMMIT_TIMEOUT_S) -> Written:
        """Append `items` (in order) and return once they are committed: their sequence
        numbers and the events as stored. Raises `StoreUnavailable` if they cannot be."""
        deadline = time.monotonic() + timeout
        tickets = [_Ticket(item, deadline) for item in items]
        with self._cond:
            if len(self._queue) + len(tickets) > MAX_PENDING:
                raise StoreUnavailable(StoreFault.AUDIT_BACKLOG)
            alone = not self._leading and not self._queue and len(tickets) <= MAX_BATCH
            if alone:  # nobody to wait for or to take along: lead our own batch at once
                self._leading = True
                for t in tickets:
                    t.taken = True
                self._batch_started, self._batch_size = time.monotonic(), len(tickets)
            else:
                self._queue.extend(tickets)
        if alone:
            self._lead(tickets)  # settles every ticket of the batch, whatever happened
            return self._outcome(tickets)
        while True:
            batch = self._wait_or_lead(tickets, deadline)
            if batch is None:
                return self._outcome(tickets)
            self._lead(batch)

    def _wait_or_lead(self, tickets: list[_Ticket], deadline: float) -> list[_Ticket] | None:
        """Under the lock: None once `tickets` are done; else a batch to lead."""
        with self._cond:
            while True:
                if all(t.done for t in tickets):
                    return None
                if not self._leading:
                    self._leading = True
                    batch = [self._queue.popleft()
                             for _ in range(min(MAX_BATCH, len(self._queue)))]
                    for t in batch:
                        t.taken = True
                    self._batch_started, self._batch_size = time.monotonic(), len(batch)
                    return batch
                left = deadline - time.monotonic()
                if left <= 0 and not any(t.taken for t in tickets):
                    # still queued behind a slow commit: nothing of ours was sent, give up
                    for t in tickets:
                        if not t.done:
                            self._queue.remove(t)
                            t.done, t.error = True, StoreUnavailable(StoreFault.TIMED_OUT)
                    return None
                # in flight: the leader's own retries are bounded, wait for its outcome
                self._cond.wait(max(0.05, min(left, 0.5)))

    def _lead(self, batch: list[_Ticket]) -> None:
        written: Written | None = None
        error: BaseException | None = None
        try:
            written, error = self._attempts(batch)
        except BaseException as exc:  # interrupted (SystemExit...): release the waiters
            error = exc
            raise
        finally:
            self._settle(batch, written, error)

    def _attempts(self, batch: list[_Ticket]) -> tuple[Written | None, BaseException | None]:
        """Write the batch, retrying what may be transient: (written, None) or the error."""
        deadline = max(t.deadline for t in batch)
        short = min(deadline, time.monotonic() + SHORT_RETRY_S)
        backoff = FIRST_BACKOFF_S
        attempt = 0
        written: Written | None = None
        error: BaseException | None = None
        while True:
            try:
                written = self._write([t.item for t in batch], attempt > 0)
                error = None
                break
            except StoreUnavailable as exc:
                error, retry = exc, exc.fault.transient
                if exc.fault not in (StoreFault.CONNECTION_LOST, StoreFault.TIMED_OUT):
                    retry = retry and time.monotonic() + backoff <= short
            except Exception as exc:
                # a duplicate event id (an earlier attempt did commit) is settled by the
                # retry's look-up; anything else is a bug, not worth retrying
                error, retry = exc, type(exc).__name__ == "IntegrityError" and attempt > 0
            attempt += 1
            if not retry or time.monotonic() + backoff > deadline:
                break
            time.sleep(backoff)
            backoff = min(2 * backoff, MAX_BACKOFF_S)
        return written, error

    def _settle(self, batch: list[_Ticket], written: Written | None,
                error: BaseException | None) -> None:
        """Hand each waiter its outcome and give the lead up."""
        with self._cond:
            now = time.monotonic()
            for i, t in enumerate(batch):
                t.done = True
                if written is not None:
                    t.result = written[i]
                else:
                    t.error = error
            if written is not None:
                self._last_success = now
                self.transactions += 1
            else:
                self._last_failure = now
                self._last_fault = (error.fault if isinstance(error, StoreUnavailable)
                                    else StoreFault.ERROR)
            self._leading = False
            self._batch_started, self._batch_size = None, 0
            self._cond.notify_all()

    @staticmethod
    def _outcome(tickets: list[_Ticket]) -> Written:
        for t in tickets:
            if t.error is not None:
                if isinstance(t.error, StoreUnavailable):
                    raise StoreUnavailable(t.error.fault) from t.error
                raise RuntimeError("the audit events could not be written") from t.error
        return [t.result for t in tickets if t.result is not None]

    def status(self, written_at: float | None = None) -> dict[str, Any]:
        """What `/readyz` reports: events waiting, the commit in progress and its age,
        and the problem (stuck, backed up, failing) if there is one. A failed commit
        counts until a later commit, or a later write to the store (`written_at`, a
        `time.monotonic()`: the readiness probe's), succeeded."""
        with self._cond:
            now = time.monotonic()
            running = now - self._batch_started if self._batch_started is not None else 0.0
            pending, in_flight = len(self._queue), self._batch_size
            since = max(self._last_success or 0.0, written_at or 0.0)
            failing = (self._last_failure is not None
                       and now - self._last_failure < RECENT_FAILURE_S
                       and since < self._last_failure)
            fault = self._last_fault
        problem: dict[str, str] | None = None
        if running > STUCK_S:
            problem = {"reason": "audit-writer-stuck",
                       "message": f"an audit commit has been running for {running:.0f} s"}
        elif pending > MAX_PENDING // 2:
            problem = {"reason": StoreFault.AUDIT_BACKLOG.value,
                       "message": f"{pending} audit events wait for a commit"}
        elif failing and fault is not None:
            problem = {"reason": fault.value,
                       "message": f"the last audit commit failed: {fault.describe()}"}
        return {"ok": problem is None, "pending": pending, "in_flight": in_flight,
                "in_flight_s": round(running, 3), "problem": problem}
