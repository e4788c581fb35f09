"""The persistent audit log: chain, tamper detection, erasure, retention, concurrency."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from dihya.audit import AuditEvent, Auditor
from dihya.audit.chain import AuditLog
from dihya.audit.gdpr import apply_retention, export, purge_older_than, purge_subject
from dihya.store import Store, audit_table


def _auditor(store: Store) -> tuple[Auditor, AuditLog]:
    auditor = Auditor(store=store)
    assert auditor.log is not None
    return auditor, auditor.log


def _fill(auditor: Auditor, n: int = 6) -> None:
    for i in range(n):
        auditor.record("generation", "ok", subject=f"user-{i % 2}", files=i,
                       note="Jane Doe asked" if i == 3 else None)


def test_events_chain_and_verify(store: Store) -> None:
    auditor, log = _auditor(store)
    _fill(auditor)
    result = log.verify()
    assert result.ok and result.rows == 6 and result.head and result.head.startswith("6:")
    rows = list(log.rows())
    assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[3]["note"] == "Jane Doe asked"
    assert len({r["actor"] for r in rows}) == 2
    assert all(r["actor"].startswith("p-") and len(r["actor"]) == 22 for r in rows)


def test_unknown_fields_cannot_be_recorded(store: Store) -> None:
    auditor, _log = _auditor(store)
    with pytest.raises(TypeError):
        auditor.record("generation", "ok", email="jane@example.org")
    with pytest.raises(ValueError):
        auditor.record("not-a-type", "ok")


def test_pseudonyms_are_random_not_derived(store: Store) -> None:
    a, _ = _auditor(store)
    first = a.pseudonym("jane")
    assert first == Auditor(store=store).pseudonym("jane")  # stable through the store
    other = Store(store.url)  # same key, but a fresh store would draw another token:
    assert Auditor(store=other).pseudonym("jane") == first
    with store.begin() as conn:
        row = conn.execute(sa.text("SELECT subject_key, pseudonym FROM dihya_subjects")).one()
    assert "jane" not in row.subject_key and row.pseudonym == first
    other.engine.dispose()


@pytest.mark.parametrize("tamper, bad_row", [
    ("UPDATE dihya_audit SET fields = replace(fields, '3', '9') WHERE seq = 4", 4),
    ("UPDATE dihya_audit SET actor = 'p-00000000000000000000' WHERE seq = 2", 2),
    ("UPDATE dihya_audit SET at = at + 1 WHERE seq = 5", 5),
    ("DELETE FROM dihya_audit WHERE seq = 4", 4),
    ("DELETE FROM dihya_audit WHERE seq = 6", 6),
    ("DELETE FROM dihya_audit WHERE seq = 1", 1),
    ("UPDATE dihya_audit_payload SET payload = 'someone else' WHERE seq = 4", 4),
])
def test_an_edited_or_deleted_row_is_named(store: Store, tamper: str, bad_row: int) -> None:
    auditor, log = _auditor(store)
    _fill(auditor)
    with store.engine.begin() as conn:
        conn.execute(sa.text(tamper))
    result = log.verify()
    assert not result.ok
    assert result.first_bad == bad_row, result.problem


def test_a_rehashed_row_breaks_the_next_link(store: Store) -> None:
    from dihya.audit.chain import row_hash

    auditor, log = _auditor(store)
    _fill(auditor)
    with store.engine.begin() as conn:
        r = conn.execute(sa.select(audit_table).where(audit_table.c.seq == 2)).one()
        row = dict(r._mapping, fields='{"files":42}')
        conn.execute(audit_table.update().where(audit_table.c.seq == 2).values(
            fields=row["fields"], hash=row_hash(r.prev_hash, row)))
    result = log.verify()
    assert (result.ok, result.first_bad) == (False, 3)


def test_erasing_a_subject_keeps_the_chain_and_unlinks_them(store: Store) -> None:
    auditor, log = _auditor(store)
    _fill(auditor)
    assert len(list(log.rows("user-1"))) == 3
    counts = purge_subject(auditor, "user-1", actor="admin")
    assert counts == {"events": 3, "notes": 1, "tokens": 0, "switches": 0}
    assert list(log.rows("user-1")) == []
    assert log.verify().ok
    assert all("note" not in r for r in log.rows())
    purged = list(log.rows())[-1]
    assert purged["type"] == "audit.purged" and "target" not in purged
    # a new event of the same id gets a new, unrelated pseudonym
    old = {r["actor"] for r in list(log.rows())[:6] if r["files"] % 2}
    auditor.record("generation", "ok", subject="user-1")
    assert next(iter(log.rows("user-1")))["actor"] not in old


def test_a_floor_keeps_a_subjects_recent_events_linked(store: Store) -> None:
    """`before` (the HTTP purge floor): what is younger keeps its note and its link."""
    auditor, log = _auditor(store)
    _fill(auditor)
    past = time.time() - 3600  # every event is younger than this floor
    counts = purge_subject(auditor, "user-1", actor="admin", before=past)
    assert counts == {"events": 0, "notes": 0, "tokens": 0, "switches": 0, "kept_events": 3}
    assert [r.get("note") for r in log.rows("user-1")] == [None, "Jane Doe asked", None]
    future = time.time() + 3600  # every event is older than this one: a full erasure
    counts = purge_subject(auditor, "user-1", actor="admin", before=future)
    assert counts == {"events": 3, "notes": 1, "tokens": 0, "switches": 0, "kept_events": 0}
    assert list(log.rows("user-1")) == [] and log.verify().ok


def test_export_is_audited_with_a_pseudonym(store: Store) -> None:
    auditor, log = _auditor(store)
    _fill(auditor)
    events = json.loads(export(auditor, "user-0", "json", actor="admin"))
    assert [e["files"] for e in events] == [0, 2, 4]
    last = list(log.rows())[-1]
    assert last["type"] == "audit.exported" and last["count"] == 3
    assert last["target"] == events[0]["actor"]
    text = export(auditor, "user-0", "csv", actor="admin")
    header, *lines = text.splitlines()
    assert header.startswith("seq,type,outcome,at,actor") and len(lines) == 4  # + export
    assert json.loads(export(auditor, "nobody", "json", actor="admin")) == []
    assert "nobody" not in json.dumps(list(log.rows()))


def test_retention_removes_a_prefix_and_the_chain_still_verifies(store: Store) -> None:
    auditor, log = _auditor(store)
    _fill(auditor)
    with store.engine.begin() as conn:  # the first four events are 400 days old
        conn.execute(audit_table.update().where(audit_table.c.seq <= 4)
                     .values(at=audit_table.c.at - 400 * 86400))
    # moving `at` broke those rows' hashes: re-chain them as if written then
    _rechain(store)
    assert log.verify().ok
    assert apply_retention(auditor, 365, interval_s=3600) == 4
    assert apply_retention(auditor, 365, interval_s=3600) is None  # once per interval
    rows = list(log.rows())
    assert rows[0]["seq"] == 5 and rows[-1]["type"] == "audit.retention"
    assert rows[-1]["count"] == 4
    assert log.verify().ok
    assert purge_older_than(auditor, 0, actor="admin") == 3
    assert log.verify().ok
    auditor.record("generation", "ok")
    assert log.verify().ok
    with store.begin() as conn:
        left = conn.execute(sa.text("SELECT count(*) FROM dihya_subjects")).scalar_one()
    assert left == 1  # only admin's, whose purge event remains


def _rechain(store: Store) -> None:
    from dihya.audit.chain import GENESIS, row_hash

    prev = GENESIS
    with store.engine.begin() as conn:
        for r in conn.execute(sa.select(audit_table).order_by(audit_table.c.seq)).all():
            digest = row_hash(prev, dict(r._mapping))
            conn.execute(audit_table.update().where(audit_table.c.seq == r.seq)
                         .values(prev_hash=prev, hash=digest))
            prev = digest
        conn.execute(sa.text("UPDATE dihya_meta SET value = :v WHERE key = 'audit_head'"),
                     {"v": f"{r.seq}:{prev}"})


WRITER = """
import sys
from dihya.audit import Auditor
from dihya.store import Store
auditor = Auditor(store=Store(sys.argv[1]))
for i in range(int(sys.argv[3])):
    auditor.record("plugin.action", "ok", subject=sys.argv[2], action="n%d" % i)
"""


def test_eight_processes_lose_no_event_and_never_fork_the_chain(store: Store) -> None:
    per_process = 40
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, store.url, f"writer-{k}",
                               str(per_process)], stderr=subprocess.PIPE, text=True)
             for k in range(8)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    log = AuditLog(store)
    result = log.verify()
    assert result.ok, result.problem
    assert result.rows == 8 * per_process
    rows = list(log.rows())
    assert [r["seq"] for r in rows] == list(range(1, 8 * per_process + 1))
    for k in range(8):
        mine = list(log.rows(f"writer-{k}"))
        assert [r["action"] for r in mine] == [f"n{i}" for i in range(per_process)]
    assert time.perf_counter() - start < 120


def test_event_model_is_the_allowlist() -> None:
    event = AuditEvent(type="generation", outcome="ok", at=1.0, files=2)
    assert event.to_json() == {"type": "generation", "outcome": "ok", "at": 1.0, "files": 2}
