"""Schema versions: a fresh store, an upgrade from version 1, concurrent upgraders."""

from __future__ import annotations

import subprocess
import sys

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
