"""The state store's engine and tables (SQLAlchemy Core); the package docstring
(`dihya.store`) says what the store holds. `dihya.store` re-exports these names on first
use."""


from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from dihya.store import SCHEMA_VERSION, SQLITE_BUSY_TIMEOUT_S
from dihya.store.directwrite import RawTransaction, pg_begin, pg_style, sqlite_begin_immediate
from dihya.store.faults import (
    StoreError,
    StoreFault,
    StoreHealth,
    StoreMissing,
    StoreUnavailable,
    classify,
    sqlite_file_fault,
)

__all__ = ["SCHEMA_VERSION", "PluginSwitch", "Store", "StoreError", "StoreFault",
           "StoreMissing", "StoreUnavailable", "sqlite_url"]

#: `[store] synchronous` -> (SQLite `PRAGMA synchronous`, PostgreSQL `synchronous_commit`)
SYNCHRONOUS: Final = {"full": ("FULL", "on"), "normal": ("NORMAL", "off")}
# PostgreSQL: how long a connection attempt, an unacknowledged write on a silent network
# and a lock wait may take before the store counts as unavailable
PG_CONNECT_TIMEOUT_S: Final = 5
PG_TCP_USER_TIMEOUT_MS: Final = 5000
PG_LOCK_TIMEOUT: Final = "10s"
# SQLite faults after which pooled connections are not to be trusted again
_REOPEN_FAULTS: Final = frozenset({StoreFault.READ_ONLY, StoreFault.IO_ERROR,
                                   StoreFault.CORRUPT})
# faults that only a write can clear (a read that works says nothing about them)
_WRITE_FAULTS: Final = frozenset({StoreFault.READ_ONLY, StoreFault.DISK_FULL,
                                  StoreFault.IO_ERROR})
# PostgreSQL: every state version bump notifies this channel, the payload the store's schema
NOTIFY_CHANNEL: Final = "dihya_state"

metadata = sa.MetaData()

meta_table = sa.Table(
    "dihya_meta", metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

tokens_table = sa.Table(
    "dihya_tokens", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("secret_sha256", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("last_used_at", sa.Float, nullable=True),
    sa.Column("expires_at", sa.Float, nullable=True),  # schema version 6; None: never
)

plugin_state_table = sa.Table(
    "dihya_plugin_state", metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("disabled", sa.Boolean, nullable=False),
    sa.Column("reason_code", sa.String(32), nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("actor", sa.String(64), nullable=True),
    sa.Column("at", sa.Float, nullable=False),
)

# -- version 2: the audit log ------------------------------------------------------------

subjects_table = sa.Table(
    "dihya_subjects", metadata,
    # HMAC-SHA256 of the subject id under the audit key: never the id itself
    sa.Column("subject_key", sa.String(64), primary_key=True),
    sa.Column("pseudonym", sa.String(32), nullable=False, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

audit_table = sa.Table(
    "dihya_audit", metadata,
    # SQLite: `INTEGER`, so that `seq` is the table's rowid (version 9): an append writes
    # one B-tree for the row and its key, not the table's and a separate key index's
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
              autoincrement=False),
    sa.Column("at", sa.Float, nullable=False, index=True),
    sa.Column("type", sa.String(40), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("actor", sa.String(32), nullable=True, index=True),
    sa.Column("target", sa.String(32), nullable=True),
    sa.Column("fields", sa.Text, nullable=False),  # canonical JSON of the other fields
    sa.Column("commitment", sa.String(64), nullable=True),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    # version 3: a unique id per event, drawn when it is recorded, so that a batch retried
    # after a lost COMMIT acknowledgement can never store an event twice (NULL before v3)
    sa.Column("event_id", sa.String(32), nullable=True),
    sa.Index("ux_dihya_audit_event_id", "event_id", unique=True),
    # version 9: only the rows that have a target (an export's subject: rare), so the
    # append of an event without one does not write this index's pages
    sa.Index("ix_dihya_audit_target", "target", sqlite_where=sa.text("target IS NOT NULL"),
             postgresql_where=sa.text("target IS NOT NULL")),
)

audit_payload_table = sa.Table(
    "dihya_audit_payload", metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("actor", sa.String(32), nullable=True, index=True),
    sa.Column("salt", sa.String(64), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
)

# -- version 3: the operator console ----------------------------------------------------

console_sessions_table = sa.Table(
    "dihya_console_sessions", metadata,
    # SHA-256 of the cookie's random value: a copy of the store holds no usable session
    sa.Column("id_sha256", sa.String(64), primary_key=True),
    sa.Column("token_id", sa.String(32), nullable=False, index=True),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("seen_at", sa.Float, nullable=False, index=True),
    # one message for the next page (post/redirect/get), never personal data
    sa.Column("notice", sa.Text, nullable=True),
)

file_lists_table = sa.Table(
    "dihya_file_lists", metadata,
    # the files behind an approved fingerprint, so a new version can be compared with them
    sa.Column("fingerprint", sa.String(80), primary_key=True),
    sa.Column("distribution", sa.String(200), nullable=False),
    sa.Column("version", sa.String(100), nullable=False),
    sa.Column("files", sa.Text, nullable=False),  # JSON [[path, sha256, size], ...]
    sa.Column("recorded_at", sa.Float, nullable=False),
)

# -- version 5: what listing a sandboxed plugin needs, and the states last audited ------

plugin_facts_table = sa.Table(
    "dihya_plugin_facts", metadata,
    # what a sandbox worker reported of the plugin's class (hooks, actions, description...)
    # when it was checked, keyed by the fingerprint of the files it loaded
    sa.Column("group_name", sa.String(200), primary_key=True),
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("fingerprint", sa.String(80), primary_key=True),
    sa.Column("core_version", sa.String(64), nullable=False),
    sa.Column("facts", sa.Text, nullable=False),  # JSON {"meta", "layers", "warnings"}
    sa.Column("recorded_at", sa.Float, nullable=False),
)

plugin_seen_table = sa.Table(
    "dihya_plugin_seen", metadata,
    # the last status audited for each plugin name (shared by every worker and node)
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("version", sa.String(100), nullable=False),
    sa.Column("fingerprint", sa.String(80), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(64), nullable=True),
    sa.Column("at", sa.Float, nullable=False),
)


# -- version 7: the fleet's consecutive hook failures per plugin (dihya.store.failures) ---

plugin_failures_table = sa.Table(
    "dihya_plugin_failures", metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    # hook calls that ended other than ok, in a row, on every worker of every node
    sa.Column("consecutive", sa.Integer, nullable=False),
    sa.Column("at", sa.Float, nullable=False),
)


# -- version 8: plugins' own log records (`dihya.store.pluginlogs`) -------------------------

plugin_logs_table = sa.Table(
    "dihya_plugin_logs", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("at", sa.Float, nullable=False, index=True),
    sa.Column("plugin", sa.String(200), nullable=False, index=True),
    sa.Column("version", sa.String(100), nullable=True),
    sa.Column("request_id", sa.String(64), nullable=True),
    sa.Column("level", sa.String(16), nullable=False),
    # the format string and its arguments (JSON), both redacted: never the needs' strings
    sa.Column("template", sa.Text, nullable=False),
    sa.Column("args", sa.Text, nullable=False),
    sa.Column("error", sa.String(100), nullable=True),  # an exception's type name
    sa.Column("cut_bytes", sa.Integer, nullable=False, default=0),
)


_READ_STATE_VERSION: Final = (f"SELECT value FROM {meta_table.name} "
                               "WHERE key = 'state_version'")


@attrs.frozen
class PluginSwitch:
    """A runtime switch recorded by an admin (or the quarantine)."""

    name: str
    reason_code: str  # disabled-by-admin | quarantined
    reason: str | None
    actor: str | None
    at: float


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite store URL; None for another database or `:memory:`."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    database = str(parsed.database)
    return Path(database.removeprefix("file:").split("?", 1)[0])


_Identity = tuple[int, int]


def _identity(path: Path) -> _Identity | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


class Store:
    """A handle on the store; cheap to share between threads, one per process.

    `create`: make the store (the SQLite file, the schema) if it does not exist; without it
    a missing store raises `StoreMissing` on first use and nothing is created.
    `synchronous`: "full" or "normal", see `SYNCHRONOUS`.
    """

    def __init__(self, url: str, create: bool = False, synchronous: str = "full") -> None:
        self.url = url
        self.create = create
        self.synchronous = synchronous
        self.path = sqlite_path(url)
        self.health = StoreHealth()
        self._identity: _Identity | None = None
        if self.path is not None:
            if create and not self.path.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # token hashes and switches: readable by the backend's user only
                with contextlib.suppress(FileExistsError):
                    os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
            self._identity = _identity(self.path)
        self.engine: Engine = _make_engine(url, self.path, synchronous)
        self._direct: Engine | None = None  # PostgreSQL: the pool of `raw_locked`
        self._ready = False
        self._version_reader = threading.local()  # a connection per thread, see below
        self.created_now = False  # this handle created the schema (the store was new)
        self._store_id: str | None = None

    def __repr__(self) -> str:
        return f"Store({self.where})"

    @property
    def where(self) -> str:
        """The store's URL without its password."""
        return repr(self.engine.url.render_as_string(hide_password=True))

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    # -- the file under a running process -----------------------------------------------

    def check_file(self) -> None:
        """Raise `StoreUnavailable` if the SQLite file is not the one this store opened: it
        was deleted (or never existed) or replaced. A stat: cheap enough for every
        transaction. Nothing to check on PostgreSQL."""
        if self.path is None:
            return
        now = _identity(self.path)
        if self._identity is None:
            if now is None:
                self.health.failed(StoreFault.STORE_MISSING)
                raise StoreMissing(f"no state store at {self.path}: it is created by `dihya "
                                   "serve`, `dihya tokens create` or the first approval")
            # missing when opened, there now: the first file seen is the store (the server
            # checks it is the one the store marker recorded before it serves from it)
            self._identity = now
        if now != self._identity:
            fault = StoreFault.FILE_DELETED if now is None else StoreFault.FILE_REPLACED
            self.health.failed(fault)
            raise StoreUnavailable(fault, str(self.path))

    def fault_of(self, exc: BaseException) -> StoreFault:
        """The cause of `exc` in this store's terms (asks the OS or the server if need be)."""
        if isinstance(exc, StoreUnavailable):
            return exc.fault
        server = None
        if self.path is None and self.engine.url.host and not self.engine.url.host.startswith(
                "/"):
            server = (self.engine.url.host, self.engine.url.port or 5432)
        fault = classify(exc, self.path, server)
        if fault in (StoreFault.ERROR, StoreFault.IO_ERROR) and self.path is not None:
            fault = sqlite_file_fault(self.path) or fault
        return fault

    @contextmanager
    def _guard(self, wrote: bool) -> Iterator[None]:
        """Around a transaction: the file check before and, for a write, after its commit
        (a file deleted meanwhile took the commit with it); every database error comes out
        as `StoreUnavailable` with its cause, and the health follows."""
        self.check_file()
        dbapi = self.engine.dialect.loaded_dbapi
        try:
            yield
        except StoreUnavailable as exc:
            self.health.failed(exc.fault)
            raise
        except (sa.exc.IntegrityError, sa.exc.DataError):
            raise  # the data, not the store: the caller decides
        except dbapi.IntegrityError as exc:  # from `raw_locked`: as SQLAlchemy would say it
            raise sa.exc.IntegrityError(None, None, exc) from exc
        except (sa.exc.DBAPIError, sa.exc.TimeoutError, OSError, dbapi.Error) as exc:
            fault = self.fault_of(exc)
            self.health.failed(fault)
            if self.is_sqlite and fault in _REOPEN_FAULTS:
                # a connection SQLite opened read-only (the file was not writable then)
                # stays read-only: every connection is opened afresh from now on
                self.engine.dispose()
            raise StoreUnavailable(fault, self.where) from exc
        if wrote:
            self.check_file()
        if self.health.fault is not None and (wrote or self.health.fault not in _WRITE_FAULTS):
            self.health.succeeded()

    # -- transactions -------------------------------------------------------------------

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        with self._guard(wrote=False):
            self.ensure_schema()
            with self.engine.begin() as conn:
                yield conn

    @contextmanager
    def locked(self, name: str = "write") -> Iterator[Connection]:
        """A transaction holding the store's write lock `name` until it ends.

        SQLite: `BEGIN IMMEDIATE` (one writer at a time, readers go on in WAL mode).
        PostgreSQL: a transaction-scoped advisory lock keyed by the schema and `name`, with
        `synchronous_commit` set as `[store] synchronous` says (see the module docstring)
        and a lock timeout, so a stuck holder makes this fail instead of hang.
        """
        with self._guard(wrote=True):
            self.ensure_schema()
            with self._locked_raw(name) as conn:
                yield conn

    @contextmanager
    def raw_locked(self, name: str) -> Iterator[RawTransaction]:
        """`locked`, with statements run on the driver's own connection (`dihya.store.directwrite`):
        for the one write on every request's path, the audit append. Same lock, same
        settings, same errors as `locked`.

        SQLite: on the connection this thread keeps for the request path's reads
        (`_read_row`: the token check, the state version), not one from the pool. SQLite
        keeps a page cache per connection, and a commit by one connection makes every
        other connection of the process read its pages again at its next statement: with
        the append on the readers' own connection, the next request's token check and
        state-version read find their pages still cached (only another process's commit
        drops them), and no pool checkout is paid. Any error drops that connection (the
        next statement opens a fresh one), as a failed read does."""
        with self._guard(wrote=True):
            self.ensure_schema()
            if self.is_sqlite:
                with self._sqlite_locked() as tx:
                    yield tx
                return
            fairy = self._direct_engine().raw_connection()
            cursor = fairy.cursor()
            tx = RawTransaction(cursor, False, pg_begin(
                f":dihya-{name}", SYNCHRONOUS[self.synchronous][1], PG_LOCK_TIMEOUT))
            try:
                yield tx
                tx.commit()
            except BaseException:
                try:
                    tx.rollback()
                except Exception:
                    fairy.invalidate()  # the connection is gone: the pool drops it
                raise
            finally:
                cursor.close()
                fairy.close()

    @contextmanager
    def _sqlite_locked(self) -> Iterator[RawTransaction]:
        """`BEGIN IMMEDIATE` … `COMMIT` on this thread's kept connection (`raw_locked`).

        The connection's busy timeout is set to 0 at its first write and left there (not
        set back after each `BEGIN IMMEDIATE`, two statements per append): its reads then
        never sleep in SQLite's busy handler; one that finds the store busy (in WAL mode,
        only while another connection recovers the WAL or holds it exclusively) fails at
        once, and `_read_row` tries it again on a fresh connection, which waits with the
        engine's timeout as every read did (`tests/store/test_sqlite_lock_wait.py`)."""
        conn = self._kept_connection()
        try:
            cursor = conn.cursor()
            try:
                kept = self._version_reader
                if kept.no_wait is not conn:  # once per connection: it stays at 0
                    cursor.execute("PRAGMA busy_timeout = 0")
                    kept.no_wait = conn
                sqlite_begin_immediate(cursor, SQLITE_BUSY_TIMEOUT_S, keep_no_wait=True)
                tx = RawTransaction(cursor, True)
                yield tx
                tx.commit()
            finally:
                cursor.close()
        except BaseException:
            # rolled back by closing it: whatever state the failure left it in (a busy
            # store, a deleted file, a read-only one), the next statement gets a new one
            self._drop_kept(conn)
            raise

    def _kept_connection(self) -> Any:
        """The driver connection this thread keeps for the request path (checked out of
        the pool once, never returned while it works)."""
        conn = getattr(self._version_reader, "conn", None)
        if conn is None:
            self._version_reader.no_wait = None  # its busy timeout: the engine's (10 s)
            conn = self.engine.raw_connection()
            if not self.is_sqlite:  # SQLite's connections are autocommit already
                conn.driver_connection.autocommit = True  # type: ignore[union-attr]
            self._version_reader.conn = conn
        return conn

    def _drop_kept(self, conn: Any) -> None:
        self._version_reader.conn = self._version_reader.no_wait = None
        with contextlib.suppress(Exception):
            conn.invalidate()  # closed: an open transaction is rolled back

    def _direct_engine(self) -> Engine:
        """PostgreSQL connections for `raw_locked`: autocommit (it begins the transaction
        itself, with the lock, in one round trip) and no liveness ping (a dead one fails
        the attempt, which is retried)."""
        if self._direct is None:
            # no reset on return: `raw_locked` ends every transaction itself (COMMIT or
            # ROLLBACK, else the connection is invalidated), so the pool's rollback had
            # nothing to do but cost its call
            self._direct = sa.create_engine(
                self.url, isolation_level="AUTOCOMMIT", pool_size=2, max_overflow=8,
                pool_timeout=10, pool_reset_on_return=None,
                connect_args=_pg_connect_args(self.url))
        return self._direct

    def dispose(self) -> None:
        """Close every pooled connection (tests, benchmarks, a process about to fork)."""
        self.engine.dispose()
        if self._direct is not None:
            self._direct.dispose()

    @contextmanager
    def _locked_raw(self, name: str) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn.execution_options(dihya_immediate=True)
            with conn.begin():
                if not self.is_sqlite:
                    # one round trip: the settings, then the lock (evaluated in this order)
                    conn.execute(_PG_LOCK, {"name": f":dihya-{name}",
                                            "sync": SYNCHRONOUS[self.synchronous][1],
                                            "lock_timeout": PG_LOCK_TIMEOUT})
                yield conn

    def ensure_schema(self) -> None:
        """Create or upgrade the schema, once per process; safe with concurrent starters.
        A store that does not exist (an empty database) is created only with `create`."""
        if self._ready:
            return
        from dihya.store.migrations import LATEST, current_version, upgrade

        self.check_file()
        try:
            with self.engine.connect() as conn:
                version = current_version(conn)
            if version == 0 and not self.create:
                raise StoreMissing(f"{self.where} holds no dihya state store (no tables): "
                                   "it is created by `dihya serve`, `dihya tokens create` or "
                                   "the first approval")
            if version != LATEST:  # the write lock only when there is something to do
                with self._locked_raw("schema") as conn:
                    before, _after = upgrade(conn)
                self.created_now = before == 0
        except StoreError:
            raise
        except (sa.exc.DBAPIError, OSError) as exc:
            fault = self.fault_of(exc)
            self.health.failed(fault)
            raise StoreUnavailable(fault, self.where) from exc
        self._ready = True

    def schema_version(self) -> int:
        from dihya.store.migrations import current_version

        with self._guard(wrote=False), self.engine.connect() as conn:
            return current_version(conn)

    def ping(self) -> bool:
        try:
            with self.begin() as conn:
                conn.execute(sa.text("SELECT 1"))
        except StoreError:
            return False
        return True

    def probe_write(self) -> None:
        """Commit a small write, as an audit append would, or raise `StoreUnavailable`
        naming why not. The write rewrites one row (`heartbeat` in dihya_meta) in place:
        probing does not grow the store."""
        with self.locked("heartbeat") as conn:
            values = {"k": "heartbeat", "v": repr(time.time())}
            if conn.execute(_UPDATE_META, values).rowcount == 0:
                conn.execute(_INSERT_META, values)

    def store_id(self) -> str:
        """The random id this store was given when created (or upgraded to version 3):
        tells a store from a replacement at the same place."""
        if self._store_id is None:
            with self.begin() as conn:
                value = conn.execute(_GET_META, {"k": "store_id"}).scalar_one_or_none()
            if value is None:  # pragma: no cover - migration 3 always writes one
                raise StoreError(f"{self.where} has no store id; upgrade its schema")
            self._store_id = str(value)
        return self._store_id

    # -- state version ------------------------------------------------------------------

    def state_version(self) -> int:
        with self.begin() as conn:
            value = conn.execute(sa.select(meta_table.c.value).where(
                meta_table.c.key == "state_version")).scalar_one_or_none()
        return int(value) if value is not None else 0

    def current_state_version(self) -> int:
        """`state_version()`, read for every request (read-your-writes kill switches), so
        as cheaply as the store allows: one autocommit statement on a connection this
        thread keeps, no pool checkout, no liveness ping, no transaction around it (a
        single SELECT sees every commit made before it, on SQLite's WAL and PostgreSQL
        alike); the file check and fault classification of every transaction still apply.
        A connection that fails is dropped and the read tried once more on a new one (a
        server that closed an idle connection); a second failure is StoreUnavailable."""
        with self._guard(wrote=False):
            self.ensure_schema()
            row = self._read_row(_READ_STATE_VERSION, {})
            return int(row[0]) if row is not None else 0

    def read_row(self, text: str, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The first row of one SELECT (`text`, with `:name` placeholders), or None, read
        as `current_state_version` reads: for the reads on every request's path (a
        bearer token's row), without SQLAlchemy's per-statement work. Same file check,
        fault classification and errors as a transaction of `begin`."""
        with self._guard(wrote=False):
            self.ensure_schema()
            return self._read_row(text if self.is_sqlite else pg_style(text), params)

    def read_rows(self, text: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Every row of one SELECT (`text`, with `:name` placeholders), read as `read_row`
        reads one: for a small read on every generation's path (`failures.failing`)."""
        with self._guard(wrote=False):
            self.ensure_schema()
            rows: list[tuple[Any, ...]] = self._read(
                text if self.is_sqlite else pg_style(text), params, True)
            return rows

    def _read_row(self, sql: str, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self._read(sql, params, False)
        return row

    def _read(self, sql: str, params: Mapping[str, Any], every: bool) -> Any:
        """The first row (None: no row) or, with `every`, the list of all rows of `sql`, on
        this thread's kept connection; a failure drops it and the read is tried once more
        on a new one."""
        for attempt in (1, 2):
            conn = None
            try:
                conn = self._kept_connection()
                cursor = conn.cursor()
                try:
                    if params:
                        cursor.execute(sql, params)
                    else:
                        cursor.execute(sql)
                    if every:
                        return [tuple(r) for r in cursor.fetchall()]
                    row = cursor.fetchone()
                finally:
                    cursor.close()
                return tuple(row) if row is not None else None
            except Exception:
                if conn is not None:
                    self._drop_kept(conn)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _bump(self, conn: Connection) -> None:
        updated = conn.execute(meta_table.update().where(meta_table.c.key == "state_version")
                               .values(value=sa.cast(sa.cast(meta_table.c.value, sa.Integer) + 1,
                                                     sa.Text)))
        if updated.rowcount == 0:
            conn.execute(meta_table.insert().values(key="state_version", value="1"))
        if not self.is_sqlite:  # delivered at commit to every LISTENing node (dihya.store.listen)
            conn.execute(sa.text("SELECT pg_notify(:channel, current_schema())"),
                         {"channel": NOTIFY_CHANNEL})

    def bump_in(self, conn: Connection) -> None:
        """Within a `locked("switches")` transaction: bump the state version (and notify)."""
        self._bump(conn)

    def bump_state_version(self) -> None:
        with self.locked("switches") as conn:
            self._bump(conn)

    # -- runtime plugin switches ---------------------------------------------------------

    def plugin_switches(self) -> dict[str, PluginSwitch]:
        with self.begin() as conn:
            rows = conn.execute(sa.select(plugin_state_table).where(
                plugin_state_table.c.disabled.is_(True))).all()
        return {r.name: PluginSwitch(r.name, r.reason_code, r.reason, r.actor, r.at)
                for r in rows}

    def set_plugin_disabled(self, name: str, disabled: bool, reason_code: str = "disabled-by-admin",
                            reason: str | None = None, actor: str | None = None) -> bool:
        """Record a switch; returns whether anything changed. Bumps the state version.

        Read and write under the store's write lock: on SQLite a deferred transaction that
        read first cannot take the write lock if another process wrote meanwhile
        (SQLITE_BUSY, at once); on PostgreSQL two admins would race.
        """
        with self.locked("switches") as conn:
            current = conn.execute(sa.select(plugin_state_table).where(
                plugin_state_table.c.name == name)).first()
            if current is not None and not disabled and not current.disabled:
                return False
            if current is None and not disabled:
                return False
            values: Mapping[str, Any] = {"disabled": disabled, "reason_code": reason_code,
                                         "reason": reason, "actor": actor, "at": time.time()}
            self.write_switch(conn, name, current is not None, values)
            # a switch (an admin's, a quarantine, its reset) starts the count of failures
            # in a row afresh, on every worker
            conn.execute(plugin_failures_table.delete().where(
                plugin_failures_table.c.name == name))
            self._bump(conn)
        return True

    def write_switch(self, conn: Connection, name: str, exists: bool,
                     values: Mapping[str, Any]) -> None:
        """Within a `locked("switches")` transaction: write the switch row of `name` (the
        caller bumps the state version)."""
        if exists:
            conn.execute(plugin_state_table.update().where(
                plugin_state_table.c.name == name).values(**values))
        else:
            conn.execute(plugin_state_table.insert().values(name=name, **values))


_PG_LOCK = sa.text("SELECT set_config('synchronous_commit', :sync, true), "
                   "set_config('lock_timeout', :lock_timeout, true), "
                   "pg_advisory_xact_lock(hashtext(current_schema() || :name))")

_GET_META = sa.select(meta_table.c.value).where(meta_table.c.key == sa.bindparam("k"))
_UPDATE_META = meta_table.update().where(meta_table.c.key == sa.bindparam("k")).values(
    value=sa.bindparam("v"))
_INSERT_META = meta_table.insert().values(key=sa.bindparam("k"), value=sa.bindparam("v"))


def _make_engine(url: str, path: Path | None, synchronous: str) -> Engine:
    if path is not None:
        # `mode=rw`: a connection never creates the file (a deleted store stays missing
        # instead of coming back empty); `Store(create=True)` made it beforehand
        engine = sa.create_engine(f"sqlite:///file:{path}?mode=rw&uri=true",
                                  connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S,
                                                "check_same_thread": False})
        sqlite_sync = SYNCHRONOUS[synchronous][0]

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            # The driver's own implicit BEGIN is off; `_begin` below emits ours, so a
            # locked transaction can be `BEGIN IMMEDIATE` (SQLAlchemy's pysqlite recipe).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={sqlite_sync}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA secure_delete=ON")  # erased rows leave zeroes, not bytes
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            immediate = conn.get_execution_options().get("dihya_immediate")
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_timeout=10,
                            connect_args=_pg_connect_args(url))


def _pg_connect_args(url: str) -> dict[str, Any]:
    """PostgreSQL: bounded waits on a dead server or a silent network (libpq's own
    settings; the URL's query wins where it sets them)."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return {}
    defaults = {"connect_timeout": PG_CONNECT_TIMEOUT_S,
                "tcp_user_timeout": PG_TCP_USER_TIMEOUT_MS,
                "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 3,
                "keepalives_count": 3}
    return {k: v for k, v in defaults.items() if k not in parsed.query}
