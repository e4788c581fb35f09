"""The shared state store (SQLAlchemy Core): tokens, switches, state version, audit log,
console sessions, the file lists of approved plugins, the facts of sandboxed plugins
(`dihya.store.facts`), the plugin states last audited, the fleet's count of each
plugin's consecutive hook failures (`dihya.store.failures`) and plugins' own log records.

A SQLite file by default (WAL mode, no server), PostgreSQL by URL
(`postgresql+psycopg://...`). Every worker and every node that shares the store sees the
same tokens and switches; the state version counter tells them when to rebuild their
registry snapshot (on PostgreSQL each bump also sends a NOTIFY, see `dihya.store.listen`). The
schema is versioned and upgraded on first use (`dihya.store.migrations`); `Store.locked()` is the
one write lock (audit appends, upgrades).

A store is created only when asked (`Store(url, create=True)`): a SQLite file is opened with
`mode=rw`, so no connection ever creates an empty file where the store was, and an empty
PostgreSQL schema is not a store. The SQLite file's identity (device, inode) is taken when
the store is opened and checked before and after every transaction: a file deleted or
replaced under a running server fails every transaction (`StoreUnavailable`) instead of
writing to an unlinked inode. Every database error that reaches `begin`/`locked` comes out
as `StoreUnavailable` naming its cause (`dihya.store.faults`).

Durability (`[store] synchronous`, see `SYNCHRONOUS`): "full" (the default) makes every
commit survive power loss — SQLite in WAL mode with `synchronous=FULL` (the WAL is synced
at each commit), PostgreSQL with `synchronous_commit = on` for the store's writes (the
commit waits for the WAL flush); "normal" makes it survive any process crash only — SQLite
`synchronous=NORMAL` (a power loss may lose the last commits, never corrupt the file),
PostgreSQL `synchronous_commit = off` (a crash of the database server may lose its last
fraction of a second of commits).

The engine and the tables are in `dihya.store.db` (SQLAlchemy), the errors in
`dihya.store.faults`; both are re-exported here when first asked for: importing this
package or one of its light modules (`faults`, `marker`, `quickread`) does not import
SQLAlchemy, a third of a `dihya` command's start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from dihya.store.db import (
        NOTIFY_CHANNEL,
        PG_CONNECT_TIMEOUT_S,
        PG_LOCK_TIMEOUT,
        PG_TCP_USER_TIMEOUT_MS,
        SYNCHRONOUS,
        PluginSwitch,
        Store,
        audit_payload_table,
        audit_table,
        console_sessions_table,
        file_lists_table,
        meta_table,
        metadata,
        plugin_facts_table,
        plugin_failures_table,
        plugin_logs_table,
        plugin_seen_table,
        plugin_state_table,
        sqlite_path,
        sqlite_url,
        subjects_table,
        tokens_table,
    )
    from dihya.store.faults import (
        StoreError,
        StoreFault,
        StoreHealth,
        StoreMissing,
        StoreUnavailable,
    )

__all__ = ["NOTIFY_CHANNEL", "PG_CONNECT_TIMEOUT_S", "PG_LOCK_TIMEOUT", "PG_TCP_USER_TIMEOUT_MS",
           "SCHEMA_VERSION", "SQLITE_BUSY_TIMEOUT_S", "SYNCHRONOUS", "PluginSwitch", "Store",
           "StoreError", "StoreFault", "StoreHealth", "StoreMissing", "StoreUnavailable",
           "audit_payload_table", "audit_table", "console_sessions_table", "file_lists_table",
           "meta_table", "metadata", "plugin_facts_table", "plugin_failures_table",
           "plugin_logs_table", "plugin_seen_table", "plugin_state_table", "sqlite_path",
           "sqlite_url", "subjects_table", "tokens_table"]

#: the schema version this core writes and reads (`dihya.store.migrations`)
SCHEMA_VERSION: Final = 9
#: how long a SQLite connection waits for another's lock: the store's own connections
#: (`dihya.store.db`) and the listing's read-only one (`dihya.store.quickread`)
SQLITE_BUSY_TIMEOUT_S: Final = 10.0

_FAULTS = frozenset({"StoreError", "StoreFault", "StoreHealth", "StoreMissing",
                     "StoreUnavailable"})
#: the names given by this package when first asked for: those of `dihya.store.faults`
#: and `dihya.store.db`
_LAZY = frozenset(__all__) - {"SCHEMA_VERSION", "SQLITE_BUSY_TIMEOUT_S"}


def __getattr__(name: str) -> Any:
    """A name of `dihya.store.faults` or `dihya.store.db`, imported with its module on
    first use (PEP 562)."""
    if name in _LAZY:
        module = "dihya.store.faults" if name in _FAULTS else "dihya.store.db"
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY)
