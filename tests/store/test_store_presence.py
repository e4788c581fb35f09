"""A store exists only where it was created, cannot vanish unnoticed, and says why it fails.

- `Store(url)` never creates anything: no SQLite file, no schema in an empty PostgreSQL
  schema; `Store(url, create=True)` does.
- The SQLite file's identity is checked around every transaction: deleted or replaced is
  `StoreUnavailable` naming it, the same file back is fine again.
- SQLite's and the OS's real answers are classified into causes (read-only, full).
- Schema version 3 upgrades a version 2 store: event ids with a unique index, the old
  chain still verifies.
- The CLI: a store missing where the store marker says one was, or a different store in
  its place, is exit 1 with what to do; `audit verify` fails on an emptied store and on a
  chain that lost its end, and read-only commands create nothing.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from dihya.audit.chain import GENESIS, canonical, row_hash
from dihya.cli import main
from dihya.store import (
    SCHEMA_VERSION,
    Store,
    StoreFault,
    StoreMissing,
    StoreUnavailable,
    sqlite_url,
)
from dihya.store.faults import classify


def test_a_missing_sqlite_store_is_never_created_by_opening_it(tmp_path: Path) -> None:
    path = tmp_path / "dihya.sqlite3"
    store = Store(sqlite_url(path))
    with pytest.raises(StoreMissing):
        store.ensure_schema()
    with pytest.raises(StoreMissing), store.begin():
        pass
    with pytest.raises(sa.exc.OperationalError):  # even the raw engine cannot create it
        store.engine.connect()
    assert not path.exists()
    created = Store(sqlite_url(path), create=True)
    created.ensure_schema()
    assert created.created_now and path.exists()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    again = Store(sqlite_url(path))
    again.ensure_schema()
    assert not again.created_now and again.store_id() == created.store_id()


def test_an_empty_postgresql_schema_is_not_a_store(pg_url: str) -> None:
    store = Store(pg_url)
    with pytest.raises(StoreMissing):
        store.ensure_schema()
    with store.engine.connect() as conn:
        assert not sa.inspect(conn).get_table_names()
    store.engine.dispose()
    created = Store(pg_url, create=True)
    created.ensure_schema()
    assert created.created_now and created.schema_version() == SCHEMA_VERSION
    created.engine.dispose()


def test_a_deleted_or_replaced_file_fails_every_transaction_until_it_is_back(
        tmp_path: Path) -> None:
    path = tmp_path / "dihya.sqlite3"
    store = Store(sqlite_url(path), create=True)
    store.bump_state_version()
    kept = tmp_path / "kept"
    os.link(path, kept)
    path.unlink()
    for attempt in (store.state_version, store.bump_state_version, store.probe_write):
        with pytest.raises(StoreUnavailable) as caught:
            attempt()
        assert caught.value.fault == StoreFault.FILE_DELETED
        assert "database file deleted" in str(caught.value)
    assert store.health.fault == StoreFault.FILE_DELETED
    Store(sqlite_url(tmp_path / "other"), create=True).ensure_schema()
    os.replace(tmp_path / "other", path)
    with pytest.raises(StoreUnavailable) as caught:
        store.state_version()
    assert caught.value.fault == StoreFault.FILE_REPLACED
    os.replace(kept, path)
    assert store.state_version() == 1  # the same file: served again
    store.probe_write()
    assert store.health.fault is None


def test_sqlite_and_os_answers_are_classified_into_causes(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE t (x TEXT)")
    conn.execute("PRAGMA query_only = ON")  # SQLite's own read-only refusal
    with pytest.raises(sqlite3.Error) as readonly:
        conn.execute("INSERT INTO t VALUES ('x')")
    assert classify(readonly.value, path) == StoreFault.READ_ONLY
    conn.execute("PRAGMA query_only = OFF")
    conn.execute("PRAGMA max_page_count = 3")  # the file cannot grow: SQLite's SQLITE_FULL
    with pytest.raises(sqlite3.Error) as full:
        for _ in range(100):
            conn.execute("INSERT INTO t VALUES (?)", ("x" * 4000,))
    assert classify(full.value, path) == StoreFault.DISK_FULL
    conn.close()
    missing = tmp_path / "missing" / "db.sqlite3"
    with pytest.raises(sqlite3.Error) as cannot_open:
        sqlite3.connect(f"file:{missing}?mode=rw", uri=True)
    assert classify(cannot_open.value, missing) == StoreFault.FILE_DELETED
    assert classify(OSError(28, "No space left on device")) == StoreFault.DISK_FULL
    assert classify(OSError(30, "Read-only file system")) == StoreFault.READ_ONLY


# The tables exactly as schema version 2 created them.
V2_DDL = [
    "CREATE TABLE dihya_meta (key VARCHAR(64) NOT NULL, value TEXT NOT NULL, PRIMARY KEY (key))",
    "CREATE TABLE dihya_tokens (id VARCHAR(32) NOT NULL, name VARCHAR(128) NOT NULL, "
    "role VARCHAR(16) NOT NULL, secret_sha256 VARCHAR(64) NOT NULL, created_at FLOAT NOT NULL, "
    "last_used_at FLOAT, PRIMARY KEY (id), UNIQUE (name))",
    "CREATE TABLE dihya_plugin_state (name VARCHAR(200) NOT NULL, disabled BOOLEAN NOT NULL, "
    "reason_code VARCHAR(32) NOT NULL, reason TEXT, actor VARCHAR(64), at FLOAT NOT NULL, "
    "PRIMARY KEY (name))",
    "CREATE TABLE dihya_subjects (subject_key VARCHAR(64) NOT NULL, pseudonym VARCHAR(32) "
    "NOT NULL, created_at FLOAT NOT NULL, PRIMARY KEY (subject_key), UNIQUE (pseudonym))",
    "CREATE TABLE dihya_audit (seq BIGINT NOT NULL, at FLOAT NOT NULL, type VARCHAR(40) NOT "
    "NULL, outcome VARCHAR(16) NOT NULL, actor VARCHAR(32), target VARCHAR(32), fields TEXT "
    "NOT NULL, commitment VARCHAR(64), prev_hash VARCHAR(64) NOT NULL, hash VARCHAR(64) NOT "
    "NULL, PRIMARY KEY (seq))",
    "CREATE TABLE dihya_audit_payload (seq BIGINT NOT NULL, actor VARCHAR(32), salt "
    "VARCHAR(64) NOT NULL, payload TEXT NOT NULL, PRIMARY KEY (seq))",
    "INSERT INTO dihya_meta (key, value) VALUES ('schema_version', '2')",
    "INSERT INTO dihya_meta (key, value) VALUES ('audit_key', 'k')",
]


def test_version_2_store_is_upgraded_and_its_chain_still_verifies(store_url: str) -> None:
    engine = sa.create_engine(store_url)
    row = {"seq": 1, "at": 1.5, "type": "generation", "outcome": "ok", "actor": None,
           "target": None, "fields": canonical({"files": 3}), "commitment": None}
    digest = row_hash(GENESIS, row)
    with engine.begin() as conn:
        for statement in V2_DDL:
            conn.execute(sa.text(statement))
        conn.execute(sa.text("INSERT INTO dihya_audit (seq, at, type, outcome, actor, target, "
                             "fields, commitment, prev_hash, hash) VALUES (:seq, :at, :type, "
                             ":outcome, :actor, :target, :fields, :commitment, :prev, :hash)"),
                     {**row, "prev": GENESIS, "hash": digest})
        conn.execute(sa.text("INSERT INTO dihya_meta VALUES ('audit_head', :v)"),
                     {"v": f"1:{digest}"})
    engine.dispose()
    store = Store(store_url)
    store.ensure_schema()
    assert store.schema_version() == SCHEMA_VERSION and len(store.store_id()) == 32
    from dihya.audit import Auditor

    auditor = Auditor(store=store)
    auditor.record("generation", "ok", subject="jane")
    assert auditor.log is not None
    result = auditor.log.verify()
    assert result.ok and result.rows == 2, result.problem
    with store.engine.connect() as conn:
        indexes = {i["name"]: i for i in sa.inspect(conn).get_indexes("dihya_audit")}
        ids = conn.execute(sa.text("SELECT event_id FROM dihya_audit ORDER BY seq")).scalars()
        assert [bool(i) for i in ids] == [False, True]  # the old row has none
    assert indexes["ux_dihya_audit_event_id"]["unique"]
    store.engine.dispose()


# -- the CLI and the store marker ------------------------------------------------------------

def _cli(config: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--config", str(config), *args])
    return result.exit_code, result.output


def _config(tmp_path: Path, store_url: str | None = None) -> Path:
    config = tmp_path / "dihya.toml"
    text = "[plugins]\nallow = []\n"
    if store_url:
        text += f'[store]\nurl = "{store_url}"\n'
    config.write_text(text)
    return config


def test_reads_create_nothing_and_a_store_missing_where_one_was_is_exit_1(
        tmp_path: Path) -> None:
    config = _config(tmp_path)
    store = tmp_path / "dihya.sqlite3"
    for args in (("tokens", "list"), ("audit", "export"), ("audit", "verify"),
                 ("plugins", "list", "--json")):
        code, _out = _cli(config, *args)
        assert code == 0 and not store.exists(), args
    assert _cli(config, "tokens", "create", "--role", "admin", "--name", "ops")[0] == 0
    marker = json.loads((tmp_path / ".dihya.toml.store-marker.json").read_text())
    assert marker["events"] is True and marker["store"].endswith("dihya.sqlite3")
    store.unlink()
    for args in (("tokens", "list"), ("audit", "verify"), ("plugins", "list"),
                 ("tokens", "create", "--role", "admin", "--name", "ops2")):
        code, out = _cli(config, *args)
        assert code == 1, (args, out)
        assert "is missing" in out and ".dihya.toml.store-marker.json" in out, out
        assert not store.exists(), args
    (tmp_path / ".dihya.toml.store-marker.json").unlink()  # on purpose: start over
    assert _cli(config, "tokens", "list")[0] == 0
    assert _cli(config, "tokens", "create", "--role", "admin", "--name", "ops")[0] == 0


def test_a_replaced_store_is_exit_1(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert _cli(config, "tokens", "create", "--role", "admin", "--name", "ops")[0] == 0
    path = tmp_path / "dihya.sqlite3"
    path.unlink()
    Store(sqlite_url(path), create=True).ensure_schema()  # recreated behind dihya's back
    code, out = _cli(config, "tokens", "list")
    assert code == 1 and "is not the one" in out and "replaced or recreated" in out


def test_verify_fails_on_an_emptied_store_and_on_a_chain_that_lost_its_end(
        tmp_path: Path, store_url: str) -> None:
    config = _config(tmp_path, store_url)
    for name in ("a", "b", "c"):
        assert _cli(config, "tokens", "create", "--role", "viewer", "--name", name)[0] == 0
    code, out = _cli(config, "audit", "verify")
    assert code == 0 and out.startswith("ok: 3 rows verified")
    store = Store(store_url)
    with store.engine.begin() as conn:  # drop the last row and rewind the head with it
        head = conn.execute(sa.text("SELECT hash FROM dihya_audit WHERE seq = 2")).scalar()
        conn.execute(sa.text("DELETE FROM dihya_audit WHERE seq = 3"))
        conn.execute(sa.text("UPDATE dihya_meta SET value = :v WHERE key = 'audit_head'"),
                     {"v": f"2:{head}"})
    code, out = _cli(config, "audit", "verify")
    assert code == 1 and "rows were removed from its end" in out, out
    with store.engine.begin() as conn:  # empty the log entirely
        conn.execute(sa.text("DELETE FROM dihya_audit"))
        conn.execute(sa.text("DELETE FROM dihya_meta WHERE key = 'audit_head'"))
    store.engine.dispose()
    code, out = _cli(config, "audit", "verify", "--json")
    assert code == 1
    result = json.loads(out.splitlines()[0])
    assert result["ok"] is False and "holds no audit event" in result["problem"]
