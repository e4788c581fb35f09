"""What the operator console keeps in the store, on SQLite and PostgreSQL: filtered audit
queries with paging, purge previews, sessions, and approved file lists."""

from __future__ import annotations

import time

import sqlalchemy as sa

from dihya.audit import Auditor
from dihya.audit.gdpr import purge_subject
from dihya.audit.query import AuditFilter, export_filtered, matching, purge_preview, search
from dihya.store import Store, console_sessions_table, file_lists_table
from dihya.store.filelists import FileEntry, FileList, fingerprint_of, recall, recorded, remember
from dihya.store.tokens import create_token, revoke_token
from dihya.web.admin.sessions import SessionStore


def _events(store: Store) -> Auditor:
    auditor = Auditor(store=store)
    for i in range(7):
        auditor.record("plugin.disabled", "ok", subject="alice", plugin="my_plugin",
                       note=f"reason {i}")
    # names that a LIKE pattern or a case-blind comparison would confuse with my_plugin
    for name in ("myXplugin", "My_Plugin", "my_plugin2", 'my"plugin'):
        auditor.record("plugin.enabled", "ok", subject="bob", plugin=name)
    auditor.record("auth.failed", "denied", reason="invalid-token")
    return auditor


def test_filters_are_exact(store: Store) -> None:
    auditor = _events(store)
    log = auditor.log
    assert log is not None
    mine = list(matching(log, AuditFilter(plugin="my_plugin")))
    assert len(mine) == 7 and {r["plugin"] for r in mine} == {"my_plugin"}
    assert [r["plugin"] for r in matching(log, AuditFilter(plugin='my"plugin'))] == \
        ['my"plugin']
    alice = mine[0]["actor"]
    assert len(list(matching(log, AuditFilter(pseudonym=alice)))) == 7
    assert [r["type"] for r in matching(log, AuditFilter(outcome="denied"))] == ["auth.failed"]
    assert len(list(matching(log, AuditFilter(type="plugin.enabled")))) == 4
    assert not list(matching(log, AuditFilter(since=time.time() + 60)))
    assert len(list(matching(log, AuditFilter(until=time.time() + 60)))) == 12


def test_pages_newest_first_both_ways(store: Store) -> None:
    auditor = _events(store)
    log = auditor.log
    assert log is not None
    flt = AuditFilter(plugin="my_plugin")
    first = search(log, flt, limit=3)
    assert first.total == 7 and first.newer is None
    seqs = [r["seq"] for r in first.rows]
    assert seqs == sorted(seqs, reverse=True) and len(seqs) == 3
    second = search(log, flt, before=first.older, limit=3)
    third = search(log, flt, before=second.older, limit=3)
    assert len(third.rows) == 1 and third.older is None
    assert [r["seq"] for r in first.rows + second.rows + third.rows] == \
        sorted((r["seq"] for r in matching(log, flt)), reverse=True)
    back = search(log, flt, after=third.newer, limit=3)
    assert [r["seq"] for r in back.rows] == [r["seq"] for r in second.rows]
    assert back.newer == second.newer


def test_filtered_export_is_audited_with_the_plugin(store: Store) -> None:
    auditor = _events(store)
    text = export_filtered(auditor, AuditFilter(plugin="my_plugin"), "jsonl", actor="carol")
    assert len(text.splitlines()) == 7
    event = list(auditor.log.rows())[-1]  # type: ignore[union-attr]
    assert (event["type"], event["plugin"], event["format"], event["count"],
            event["reason"]) == ("audit.exported", "my_plugin", "jsonl", 7, "filtered")


#: what a preview without a floor (the store layer's default) keeps back
NOTHING_KEPT = {"kept_events": 0, "kept_logs": 0}


def test_purge_preview_counts_without_changing_anything(store: Store) -> None:
    auditor = _events(store)
    log = auditor.log
    assert log is not None
    create_token(store, "alice", "viewer")
    before = list(log.rows())
    preview = purge_preview(log, subject="alice")
    assert preview == {"events": 7, "notes": 7, "tokens": 1, "logs": 0, **NOTHING_KEPT}
    assert purge_preview(log, subject="nobody") == {"events": 0, "notes": 0, "tokens": 0,
                                                    "logs": 0, **NOTHING_KEPT}
    # a plugin: the events naming exactly it (they stay), their notes and its log records
    assert purge_preview(log, plugin="my_plugin") == {"events": 7, "notes": 7, "tokens": 0,
                                                      "logs": 0, **NOTHING_KEPT}
    assert purge_preview(log, plugin="my_plugin2") == {"events": 1, "notes": 0, "tokens": 0,
                                                       "logs": 0, **NOTHING_KEPT}
    assert purge_preview(log, older_than_days=0)["events"] == 12
    assert purge_preview(log, older_than_days=1)["events"] == 0
    assert list(log.rows()) == before
    counts = purge_subject(auditor, "alice", actor="carol")
    assert (counts["events"], counts["notes"], counts["tokens"]) == (7, 7, 1)


def test_sessions(store: Store) -> None:
    token_id = create_token(store, "dana", "admin").split("_")[1]
    sessions = SessionStore(store, idle_s=60, max_age_s=3600)
    from dihya.store.tokens import token_by_id

    token = token_by_id(store, token_id)
    assert token is not None
    session_id = sessions.start(token)
    found = sessions.find(session_id)
    assert found is not None and found.token.name == "dana" and found.is_admin
    assert found.csrf_ok(found.csrf) and not found.csrf_ok("x") and not found.csrf_ok(None)
    sessions.set_notice(found.key, "done")
    assert sessions.find(session_id).notice == "done"  # type: ignore[union-attr]
    assert sessions.find(session_id + "x") is None and sessions.find("") is None
    with store.begin() as conn:
        conn.execute(console_sessions_table.update().values(seen_at=time.time() - 61))
    assert sessions.find(session_id) is None  # idle: ended, and deleted
    with store.begin() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(
            console_sessions_table)).scalar_one() == 0
    again = sessions.start(token)
    assert revoke_token(store, "dana") and sessions.find(again) is None


def test_file_lists_are_kept_only_when_they_match_their_fingerprint(store: Store) -> None:
    entries = (FileEntry("pkg/__init__.py", "ab" * 32, 10),
               FileEntry("pkg-1.0.dist-info/METADATA", "cd" * 32, 20))
    good = FileList(fingerprint_of(entries), "pkg", "1.0", entries)
    assert remember(store, good) and remember(store, good)  # idempotent
    assert recall(store, good.fingerprint) == good
    assert recorded(store, [good.fingerprint, "sha256:" + "0" * 64]) == {good.fingerprint}
    forged = FileList("sha256:" + "1" * 64, "pkg", "1.0", entries)
    assert not remember(store, forged) and recall(store, forged.fingerprint) is None
    with store.begin() as conn:  # altered in the store: never shown as what was approved
        conn.execute(file_lists_table.update().values(files='[["pkg/evil.py","00",1]]'))
    assert recall(store, good.fingerprint) is None
