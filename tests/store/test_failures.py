"""The fleet's count of consecutive hook failures (`dihya.store.failures`), on SQLite and
PostgreSQL: counted across handles (stand-ins for workers and nodes), reset by a success
and by any switch, and the quarantine recorded exactly once, exactly at the limit."""

from __future__ import annotations

import threading

from dihya.store import Store
from dihya.store.failures import Outcomes, batch, charge, counts, failing, record


def test_outcomes_fold_in_call_order() -> None:
    assert batch([("a", False), ("a", False), ("b", True)]) == {
        "a": Outcomes(False, 2), "b": Outcomes(True, 0)}
    assert batch([("a", False), ("a", True), ("a", False)]) == {"a": Outcomes(True, 1)}


def test_sandbox_abuses_turn_ok_calls_into_failures() -> None:
    """An abuser whose calls all answer is counted; its abuses are not reset by them."""
    calls = [("a", True), ("b", True), ("a", True), ("a", False)]
    assert charge(calls, {}) == calls
    assert charge(calls, {"a": 1}) == [("a", False), ("b", True), ("a", True), ("a", False)]
    assert batch(charge(calls, {"a": 2})) == {"a": Outcomes(False, 3), "b": Outcomes(True, 0)}
    # not called in this batch (or more abuses than ok calls): added as failures
    assert charge([("b", True)], {"a": 2, "c": 0}) == [("b", True), ("a", False), ("a", False)]


def test_counted_across_handles_and_quarantined_once(store: Store) -> None:
    other = Store(store.url)  # another worker or node
    try:
        version = store.state_version()
        assert record(store, {"p": Outcomes(False, 1)}, 3) == {}
        assert record(other, {"p": Outcomes(False, 1)}, 3) == {}
        assert failing(other) == {"p"} and counts(store) == {"p": 2}
        assert store.state_version() == version  # counting alone rebuilds nothing
        assert record(other, {"p": Outcomes(False, 1)}, 3) == {"p": 3}
        switch = store.plugin_switches()["p"]
        assert (switch.reason_code, switch.reason) == (
            "quarantined", "3 consecutive failed calls or sandbox violations")
        assert store.state_version() == version + 1
        # late failures of a quarantined plugin are not counted
        assert record(store, {"p": Outcomes(False, 5)}, 3) == {}
        assert failing(store) == frozenset()
        # the reset (CLI, API, console: one store call) starts afresh, everywhere
        assert other.set_plugin_disabled("p", False)
        assert record(store, {"p": Outcomes(False, 2)}, 3) == {}
        assert record(other, {"p": Outcomes(True, 0)}, 3) == {}  # a success resets
        assert counts(store) == {"p": 0}
        assert record(store, {"p": Outcomes(False, 2)}, 3) == {}
        assert record(store, {"p": Outcomes(True, 2)}, 3) == {}  # ok, then two failures
        assert counts(other) == {"p": 2}
    finally:
        other.dispose()


def test_concurrent_workers_lose_no_count(store: Store) -> None:
    handles = [Store(store.url) for _ in range(4)]
    quarantined: list[dict[str, int]] = []

    def worker(handle: Store) -> None:
        for _ in range(10):
            quarantined.append(record(handle, {"q": Outcomes(False, 1)}, 25))

    threads = [threading.Thread(target=worker, args=(h,)) for h in handles]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for h in handles:
        h.dispose()
    # 40 failures: exactly one write reached 25; the 15 after it were not counted
    assert [q for q in quarantined if q] == [{"q": 25}]
    assert failing(store) == frozenset()


def test_failing_reads_fresh_on_the_kept_connection(store: Store) -> None:
    """`failing` reads on the connection the request path keeps (`Store.read_rows`): a
    failure another worker counted after this handle's last read is seen by its next one
    (a success right after it must reset it), names are bound, never spliced into the SQL."""
    other = Store(store.url)  # another worker or node
    odd = "x') OR 1=1 --"
    try:
        assert failing(store, ["p", "q", odd]) == frozenset()  # the connection is now kept
        assert record(other, {"p": Outcomes(False, 1), odd: Outcomes(False, 2)}, 9) == {}
        assert failing(store, ["p", "q"]) == {"p"}
        assert failing(store, [odd]) == {odd}
        assert failing(store, ["q"]) == frozenset()
        assert failing(store, []) == frozenset()
        assert failing(store) == {"p", odd}
        assert record(store, {"p": Outcomes(True, 0)}, 9) == {}
        assert failing(other, ["p", odd]) == {odd}
    finally:
        other.dispose()
