"""Schema versions of the state store and the ordered, locked path between them.

`MIGRATIONS[i]` takes a store from version `i` to `i + 1`. `upgrade()` runs every missing
step in one transaction that first takes the store's write lock (`BEGIN IMMEDIATE` on
SQLite, `pg_advisory_xact_lock` on PostgreSQL), so two processes that start at once never
both upgrade: the second waits, then finds the schema current. A migration never edits an
earlier one's tables in place: a change to a table is a new step.

Version 1 (dihya-core 0.1-0.3): dihya_meta, dihya_tokens, dihya_plugin_state.
Version 2: the audit log (dihya_audit, dihya_audit_payload) and pseudonyms
(dihya_subjects), and a per-store audit key in dihya_meta.
Version 3: the operator console's sessions (dihya_console_sessions) and the file lists of
approved plugins (dihya_file_lists).
Version 4: `dihya_audit.event_id` with a unique index (a retried batch cannot store an
event twice), a random `store_id` in dihya_meta (tells a store from its replacement) and
the `heartbeat` row `/readyz` rewrites to probe a write.
Version 5: the facts of sandboxed plugins by fingerprint (dihya_plugin_facts, read by
listings instead of starting workers) and the plugin states last audited
(dihya_plugin_seen: one audit event per change, not per worker start).
Version 6: `dihya_tokens.expires_at` (a token's optional expiry, `tokens create --expires`).
Version 7: the fleet's count of consecutive hook failures per plugin
(dihya_plugin_failures), so a plugin is quarantined once for the whole fleet.
Version 8: plugins' own log records (dihya_plugin_logs, `dihya.store.pluginlogs`).
Version 9: fewer pages written per audit append: on SQLite `dihya_audit.seq` becomes the
table's rowid (`INTEGER PRIMARY KEY`: the table is rebuilt, rows, hashes and order kept),
and on both backends the index on `target` holds only the rows that have one.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dihya import store as st

Migration = Callable[[Connection], None]


def _v1_state(conn: Connection) -> None:
    st.metadata.create_all(conn, tables=[st.meta_table, st.tokens_table,
                                         st.plugin_state_table], checkfirst=True)


def _v2_audit(conn: Connection) -> None:
    st.metadata.create_all(conn, tables=[st.subjects_table, st.audit_table,
                                         st.audit_payload_table], checkfirst=True)
    exists = conn.execute(sa.select(st.meta_table.c.key).where(
        st.meta_table.c.key == "audit_key")).first()
    if exists is None:
        conn.execute(st.meta_table.insert().values(key="audit_key",
                                                   value=secrets.token_hex(32)))


def _v3_console(conn: Connection) -> None:
    st.metadata.create_all(conn, tables=[st.console_sessions_table, st.file_lists_table],
                           checkfirst=True)


def _v4_event_ids(conn: Connection) -> None:
    # A store created at version 4 got the column and its index from `_v2_audit` (which
    # creates the tables as they are now): add them only where they are missing.
    inspector = sa.inspect(conn)
    columns = {c["name"] for c in inspector.get_columns(st.audit_table.name)}
    if "event_id" not in columns:
        conn.execute(sa.text(f"ALTER TABLE {st.audit_table.name} "
                             "ADD COLUMN event_id VARCHAR(32)"))
    indexes = {i["name"] for i in inspector.get_indexes(st.audit_table.name)}
    if "ux_dihya_audit_event_id" not in indexes:
        conn.execute(sa.text(f"CREATE UNIQUE INDEX ux_dihya_audit_event_id "
                             f"ON {st.audit_table.name} (event_id)"))
    for key, value in (("store_id", secrets.token_hex(16)), ("heartbeat", "0")):
        exists = conn.execute(sa.select(st.meta_table.c.key).where(
            st.meta_table.c.key == key)).first()
        if exists is None:
            conn.execute(st.meta_table.insert().values(key=key, value=value))


def _v5_plugin_facts(conn: Connection) -> None:
    st.metadata.create_all(conn, tables=[st.plugin_facts_table, st.plugin_seen_table],
                           checkfirst=True)


def _v6_token_expiry(conn: Connection) -> None:
    # a store created at version 6 or later got the column from `_v1_state`
    columns = {c["name"] for c in sa.inspect(conn).get_columns(st.tokens_table.name)}
    if "expires_at" not in columns:
        conn.execute(sa.text(f"ALTER TABLE {st.tokens_table.name} "
                             "ADD COLUMN expires_at FLOAT"))


def _v7_plugin_failures(conn: Connection) -> None:
    st.metadata.create_all(conn, tables=[st.plugin_failures_table], checkfirst=True)


def _v8_plugin_logs(conn: Connection) -> None:
    st.metadata.create_all(conn, tables=[st.plugin_logs_table], checkfirst=True)


_TARGET_INDEX: Final = "ix_dihya_audit_target"


def _sqlite_seq_is_rowid(conn: Connection) -> bool:
    """Whether `dihya_audit.seq` is declared `INTEGER` and the primary key (a rowid alias)."""
    for row in conn.exec_driver_sql(f"PRAGMA table_info({st.audit_table.name})"):
        if row[1] == "seq":
            return str(row[2]).upper() == "INTEGER" and int(row[5]) == 1
    return False  # pragma: no cover - version 2 made the column


def _partial_target_index(conn: Connection) -> bool:
    """Whether the index on `target` is already the partial one (`WHERE target IS NOT NULL`)."""
    if conn.dialect.name == "sqlite":
        found = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'index' "
                                     f"AND name = '{_TARGET_INDEX}'").scalar_one_or_none()
    else:
        found = conn.execute(sa.text(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() "
            "AND indexname = :name"), {"name": _TARGET_INDEX}).scalar_one_or_none()
    return found is not None and "WHERE" in str(found).upper()


def _v9_audit_pages(conn: Connection) -> None:
    # A store created at version 9 got both from `_v2_audit`: nothing to do there.
    table = st.audit_table
    if conn.dialect.name == "sqlite" and not _sqlite_seq_is_rowid(conn):
        # SQLite cannot change a primary key in place: the table is rebuilt, every column
        # copied as it is (the chain's hashes cover values, not the storage)
        indexes = [r[0] for r in conn.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
            f"AND tbl_name = '{table.name}'")]
        for name in indexes:
            conn.exec_driver_sql(f'DROP INDEX "{name}"')
        conn.exec_driver_sql(f"ALTER TABLE {table.name} RENAME TO {table.name}_v8")
        table.create(conn)  # the table and its indexes as they are now
        columns = ", ".join(c.name for c in table.columns)
        conn.exec_driver_sql(f"INSERT INTO {table.name} ({columns}) "
                             f"SELECT {columns} FROM {table.name}_v8 ORDER BY seq")
        conn.exec_driver_sql(f"DROP TABLE {table.name}_v8")
        return
    if not _partial_target_index(conn):
        conn.exec_driver_sql(f"DROP INDEX IF EXISTS {_TARGET_INDEX}")
        conn.exec_driver_sql(f"CREATE INDEX {_TARGET_INDEX} ON {table.name} (target) "
                             "WHERE target IS NOT NULL")


MIGRATIONS: Final[tuple[Migration, ...]] = (_v1_state, _v2_audit, _v3_console,
                                            _v4_event_ids, _v5_plugin_facts, _v6_token_expiry,
                                            _v7_plugin_failures, _v8_plugin_logs,
                                            _v9_audit_pages)
LATEST: Final = len(MIGRATIONS)


def current_version(conn: Connection) -> int:
    """The schema version recorded in the store; 0 for an empty database."""
    if not sa.inspect(conn).has_table(st.meta_table.name):
        return 0
    value = conn.execute(sa.select(st.meta_table.c.value).where(
        st.meta_table.c.key == "schema_version")).scalar_one_or_none()
    return int(value) if value is not None else 0


def upgrade(conn: Connection, target: int | None = None) -> tuple[int, int]:
    """Bring the schema to `target` (default: the latest) inside the caller's locked
    transaction; returns (version before, version after)."""
    target = len(MIGRATIONS) if target is None else target
    before = current_version(conn)
    if before > len(MIGRATIONS):
        raise st.StoreError(f"the store has schema version {before}, newer than this "
                            f"dihya-core understands ({len(MIGRATIONS)}); upgrade dihya-core")
    for version in range(before, target):
        MIGRATIONS[version](conn)
    if target > before:
        updated = conn.execute(st.meta_table.update().where(
            st.meta_table.c.key == "schema_version").values(value=str(target)))
        if updated.rowcount == 0:
            conn.execute(st.meta_table.insert().values(key="schema_version",
                                                       value=str(target)))
    return before, max(before, target)
