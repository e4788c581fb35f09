"""The v5 tables on SQLite and PostgreSQL: sandboxed plugins' facts by fingerprint
(`dihya.store.facts`) and the plugin states last audited (`dihya.store.seen`)."""

from __future__ import annotations

import threading

from dihya.store import Store
from dihya.store.facts import recall_facts, record_facts
from dihya.store.seen import SeenState, note_changes

FACTS = {"meta": {"hooks": ["after_generation"], "description": "d"}, "layers": ["env"],
         "warnings": []}


def test_facts_are_read_back_only_for_their_fingerprint_and_group(store: Store) -> None:
    record_facts(store, "g", "p", "sha256:aa", FACTS)
    record_facts(store, "g", "p", "sha256:aa", {**FACTS, "layers": ["env", "bwrap"]})  # replaced
    record_facts(store, "other-group", "p", "sha256:bb", FACTS)
    found = recall_facts(store, "g", [("p", "sha256:aa"), ("p", "sha256:bb"), ("q", "x")])
    assert found == {("p", "sha256:aa"): {**FACTS, "layers": ["env", "bwrap"]}}
    assert recall_facts(store, "g", []) == {}


def test_each_change_is_returned_once_whoever_notes_it(store_url: str) -> None:
    stores = [Store(store_url, create=True) for _ in range(4)]
    a = SeenState("a", "1.0", "sha256:1", "active", None)
    b = SeenState("b", "1.0", None, "refused", "not-allowlisted")
    results: list[list[object]] = []
    lock = threading.Lock()

    def note(store: Store) -> None:
        changes = note_changes(store, [a, b])
        with lock:
            results.append(changes)

    threads = [threading.Thread(target=note, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # four workers starting at once: the changes are returned to one of them only
    assert sorted(len(r) for r in results) == [0, 0, 0, 2]
    assert note_changes(stores[0], [a, b]) == []
    upgraded = SeenState("a", "2.0", "sha256:2", "refused", "not-allowlisted")
    (change,) = note_changes(stores[1], [upgraded, b])
    assert change.before == a and change.new_version and change.new_status
    # files hashed now that were not hashed before: the same version, not a new one
    hashed = SeenState("b", "1.0", "sha256:3", "active", None)
    (change,) = note_changes(stores[2], [upgraded, hashed])
    assert not change.new_version and change.new_status
    for s in stores:
        s.engine.dispose()
