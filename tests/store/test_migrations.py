"""Schema versions: a fresh store, an upgrade from version 1, concurrent upgraders."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from dihya.store import SCHEMA_VERSION, Store, StoreError, metadata, migrations

# The tables exactly as dihya-core 0.3 (schema version 1) created them.
V1_DDL = [
    "CREATE TABLE dihya_meta (key VARCHAR(64) NOT NULL, value TEXT NOT NULL, PRIMARY KEY (key))",
    "CREATE TABLE dihya_tokens (id VARCHAR(32) NOT NULL, name VARCHAR(128) NOT NULL, "
    "role VARCHAR(16) NOT NULL, secret_sha256 VARCHAR(64) NOT NULL, created_at FLOAT NOT NULL, "
    "last_used_at FLOAT, PRIMARY KEY (id), UNIQUE (name))",
    "CREATE TABLE dihya_plugin_state (name VARCHAR(200) NOT NULL, disabled BOOLEAN NOT NULL, "
    "reason_code VARCHAR(32) NOT NULL, reason TEXT, actor VARCHAR(64), at FLOAT NOT NULL, "
    "PRIMARY KEY (name))",
    "INSERT INTO dihya_meta (key, value) VALUES ('schema_version', '1')",
    "INSERT INTO dihya_meta (key, value) VALUES ('state_version', '7')",
    "INSERT INTO dihya_tokens VALUES ('0123456789abcdef', 'ci-bot', 'developer', "
    "'" + "a" * 64 + "', 1.5, NULL)",
    "INSERT INTO dihya_plugin_state VALUES ('example', TRUE, 'disabled-by-admin', 'why', "
    "'p-old', 2.5)",
]


def _columns(engine: sa.Engine) -> dict[str, set[str]]:
    inspector = sa.inspect(engine)
    return {t: {c["name"] for c in inspector.get_columns(t)}
            for t in inspector.get_table_names() if t.startswith("dihya_")}


def test_the_latest_version_is_the_number_of_migrations() -> None:
    assert len(migrations.MIGRATIONS) == SCHEMA_VERSION


def test_fresh_store_has_the_whole_schema(store: Store) -> None:
    assert store.schema_version() == SCHEMA_VERSION
    assert _columns(store.engine) == {t.name: {c.name for c in t.columns}
                                      for t in metadata.sorted_tables}


def test_version_1_database_is_upgraded_keeping_its_data(store_url: str) -> None:
    engine = sa.create_engine(store_url)
    with engine.begin() as conn:
        for statement in V1_DDL:
            conn.execute(sa.text(statement))
    engine.dispose()
    store = Store(store_url)
    assert store.schema_version() == 1
    store.ensure_schema()
    assert store.schema_version() == SCHEMA_VERSION
    assert store.state_version() == 7
    assert set(store.plugin_switches()) == {"example"}
    from dihya.store.tokens import list_tokens

    assert [t.name for t in list_tokens(store)] == ["ci-bot"]
    # the upgraded store works: audit events chain and verify
    from dihya.audit import Auditor

    auditor = Auditor(store=store)
    auditor.record("generation", "ok", subject="ci-bot")
    assert auditor.log is not None and auditor.log.verify().ok
    store.engine.dispose()


def test_a_newer_schema_is_refused(store: Store) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE dihya_meta SET value = '99' WHERE key = 'schema_version'"))
    with pytest.raises(StoreError, match="newer than this dihya-core"):
        Store(store.url).ensure_schema()


def test_concurrent_upgraders_upgrade_once(store_url: str) -> None:
    code = ("import sys; from dihya.store import Store; s = Store(sys.argv[1], create=True); "
            "s.ensure_schema(); print(s.schema_version())")
    procs = [subprocess.Popen([sys.executable, "-c", code, store_url], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(8)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _out, err in outs]
    assert {out.strip() for out, _err in outs} == {str(SCHEMA_VERSION)}
    store = Store(store_url)
    with store.begin() as conn:
        keys = conn.execute(sa.text("SELECT key FROM dihya_meta WHERE key = 'audit_key'")).all()
    assert len(keys) == 1
    store.engine.dispose()


# `dihya_audit` and its indexes exactly as schema versions 2-8 created them on SQLite
V8_AUDIT_DDL = [
    "CREATE TABLE dihya_audit (seq BIGINT NOT NULL, at FLOAT NOT NULL, type VARCHAR(40) NOT "
    "NULL, outcome VARCHAR(16) NOT NULL, actor VARCHAR(32), target VARCHAR(32), fields TEXT "
    "NOT NULL, commitment VARCHAR(64), prev_hash VARCHAR(64) NOT NULL, hash VARCHAR(64) NOT "
    "NULL, event_id VARCHAR(32), PRIMARY KEY (seq))",
    "CREATE INDEX ix_dihya_audit_at ON dihya_audit (at)",
    "CREATE INDEX ix_dihya_audit_actor ON dihya_audit (actor)",
    "CREATE INDEX ix_dihya_audit_target ON dihya_audit (target)",
    "CREATE UNIQUE INDEX ux_dihya_audit_event_id ON dihya_audit (event_id)",
]


def _audit_rows(engine: sa.Engine) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text("SELECT * FROM dihya_audit ORDER BY seq"))]


def test_version_8_audit_log_is_rebuilt_keeping_every_row_and_the_chain(tmp_path: Path) -> None:
    """Version 9 rebuilds a SQLite `dihya_audit` so that `seq` is the rowid: every row, hash
    and id is kept, the chain still verifies, the unique index on `event_id` still refuses
    a second row for one event, and an erasure by target still finds its rows."""
    from dihya.audit import Auditor
    from dihya.store import sqlite_url

    url = sqlite_url(tmp_path / "v8.sqlite3")
    store = Store(url, create=True)
    auditor = Auditor(store=store)
    for i in range(5):
        auditor.record("generation", "ok", subject=f"dev-{i % 2}", files=i)
    auditor.record("audit.exported", "ok", subject="admin", target="dev-1", count=2)
    before = _audit_rows(store.engine)
    store.engine.dispose()
    # the same rows in the table as versions 2-8 made it
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE dihya_audit RENAME TO old_audit"))
        for name in ("ix_dihya_audit_at", "ix_dihya_audit_actor", "ix_dihya_audit_target",
                     "ux_dihya_audit_event_id"):
            conn.execute(sa.text(f"DROP INDEX {name}"))
        for statement in V8_AUDIT_DDL:
            conn.execute(sa.text(statement))
        conn.execute(sa.text("INSERT INTO dihya_audit SELECT * FROM old_audit"))
        conn.execute(sa.text("DROP TABLE old_audit"))
        conn.execute(sa.text("UPDATE dihya_meta SET value = '8' WHERE key = 'schema_version'"))
    engine.dispose()

    upgraded = Store(url)
    assert upgraded.schema_version() == 8
    upgraded.ensure_schema()
    assert upgraded.schema_version() == SCHEMA_VERSION
    assert _audit_rows(upgraded.engine) == before
    with upgraded.engine.connect() as conn:
        info = {r[1]: r for r in conn.exec_driver_sql("PRAGMA table_info(dihya_audit)")}
        assert info["seq"][2] == "INTEGER" and info["seq"][5] == 1  # the rowid
        indexes = dict(conn.exec_driver_sql(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
            "AND tbl_name = 'dihya_audit'").all())
        assert "WHERE target IS NOT NULL" in indexes["ix_dihya_audit_target"]
        assert set(indexes) == {"ix_dihya_audit_at", "ix_dihya_audit_actor",
                                "ix_dihya_audit_target", "ux_dihya_audit_event_id"}
        with pytest.raises(sa.exc.IntegrityError):  # one row per event, still
            conn.execute(sa.text("INSERT INTO dihya_audit SELECT seq + 100, at, type, outcome, "
                                 "actor, target, fields, commitment, prev_hash, hash, event_id "
                                 "FROM dihya_audit WHERE seq = 1"))
    again = Auditor(store=upgraded)
    again.record("generation", "ok", subject="dev-0")
    assert again.log is not None
    result = again.log.verify()
    assert result.ok, result
    with upgraded.engine.connect() as conn:  # a look-up by target still uses its index
        plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql(
            "EXPLAIN QUERY PLAN SELECT seq FROM dihya_audit WHERE target = 'p-x'"))
        assert "ix_dihya_audit_target" in plan, plan
    # dev-1 acted twice and was the target of the export once: erasure finds all three
    assert again.log.purge_subject("dev-1")["events"] == 3
    assert again.log.verify().ok
    upgraded.engine.dispose()


def test_a_fresh_store_needs_no_rebuild(store: Store) -> None:
    """A store created at version 9 has the rowid `seq` and the partial index already."""
    with store.engine.connect() as conn:
        assert migrations._partial_target_index(conn)
        if store.is_sqlite:
            assert migrations._sqlite_seq_is_rowid(conn)


def test_version_8_target_index_becomes_partial(store: Store) -> None:
    """On either backend a version-8 store's full index on `target` is replaced by the
    partial one, and the rows with a target are still found through it."""
    from dihya.audit import Auditor

    auditor = Auditor(store=store)
    auditor.record("audit.exported", "ok", subject="admin", target="dev-1", count=1)
    with store.engine.begin() as conn:
        conn.execute(sa.text("DROP INDEX ix_dihya_audit_target"))
        conn.execute(sa.text("CREATE INDEX ix_dihya_audit_target ON dihya_audit (target)"))
        conn.execute(sa.text("UPDATE dihya_meta SET value = '8' WHERE key = 'schema_version'"))
        assert not migrations._partial_target_index(conn)
    store.engine.dispose()
    upgraded = Store(store.url)
    upgraded.ensure_schema()
    assert upgraded.schema_version() == SCHEMA_VERSION
    with upgraded.engine.connect() as conn:
        assert migrations._partial_target_index(conn)
    again = Auditor(store=upgraded)
    assert again.log is not None
    assert again.log.purge_subject("dev-1")["events"] == 1
    assert again.log.verify().ok
    upgraded.engine.dispose()
