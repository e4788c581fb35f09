"""The shared state store (SQLAlchemy Core): tokens, switches, state version, audit log,
console sessions and the file lists of approved plugins.

A SQLite file by default (WAL mode, no server), PostgreSQL by URL
(`postgresql+psycopg://...`). Every worker and every node that shares the store sees the
same tokens and switches; the state version counter tells them when to rebuild their
registry snapshot (on PostgreSQL each bump also sends a NOTIFY, see `dihya.listen`). The
schema is versioned and upgraded on first use (`dihya.migrations`); `Store.locked()` is the
one write lock (audit appends, upgrades).
"""

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

SCHEMA_VERSION: Final = 3
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
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("at", sa.Float, nullable=False, index=True),
    sa.Column("type", sa.String(40), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("actor", sa.String(32), nullable=True, index=True),
    sa.Column("target", sa.String(32), nullable=True, index=True),
    sa.Column("fields", sa.Text, nullable=False),  # canonical JSON of the other fields
    sa.Column("commitment", sa.String(64), nullable=True),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
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


_READ_STATE_VERSION: Final = (f"SELECT value FROM {meta_table.name} "
                               "WHERE key = 'state_version'")


class StoreError(Exception):
    """The store cannot be reached or has an unknown schema; the message says which."""


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


class Store:
    """A handle on the store; cheap to share between threads, one per process."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = _make_engine(url)
        self._ready = False
        self._version_reader = threading.local()  # a connection per thread, see below

    def __repr__(self) -> str:
        return f"Store({self.engine.url.render_as_string(hide_password=True)!r})"

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        self.ensure_schema()
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def locked(self, name: str = "write", fast_commit: bool = False) -> Iterator[Connection]:
        """A transaction holding the store's write lock `name` until it ends.

        SQLite: `BEGIN IMMEDIATE` (one writer at a time, readers go on in WAL mode).
        PostgreSQL: a transaction-scoped advisory lock keyed by the schema and `name`;
        `fast_commit` does not wait for the WAL flush (`synchronous_commit = off`): a
        server crash may lose the last fraction of a second of such commits, never
        corrupt or reorder them (SQLite's `synchronous=NORMAL` makes the same trade).
        """
        self.ensure_schema()
        with self._locked_raw(name) as conn:
            if fast_commit and not self.is_sqlite:
                conn.execute(sa.text("SET LOCAL synchronous_commit TO OFF"))
            yield conn

    @contextmanager
    def _locked_raw(self, name: str) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn.execution_options(dihya_immediate=True)
            with conn.begin():
                if not self.is_sqlite:
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock("
                                         "hashtext(current_schema() || :name))"),
                                 {"name": f":dihya-{name}"})
                yield conn

    def ensure_schema(self) -> None:
        """Create or upgrade the schema, once per process; safe with concurrent starters."""
        if self._ready:
            return
        from dihya.migrations import upgrade

        try:
            with self._locked_raw("schema") as conn:
                upgrade(conn)
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"cannot open the state store {self!r}: {exc.__class__.__name__}: "
                             f"{exc.orig if hasattr(exc, 'orig') else exc}") from exc
        self._ready = True

    def schema_version(self) -> int:
        from dihya.migrations import current_version

        with self.engine.connect() as conn:
            return current_version(conn)

    def ping(self) -> bool:
        try:
            with self.begin() as conn:
                conn.execute(sa.text("SELECT 1"))
        except (StoreError, sa.exc.SQLAlchemyError):
            return False
        return True

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
        alike). A connection that fails is dropped and the read tried once more on a new
        one (a server that closed an idle connection); a second failure raises StoreError."""
        self.ensure_schema()
        for attempt in (1, 2):
            conn = getattr(self._version_reader, "conn", None)
            try:
                if conn is None:
                    conn = self.engine.raw_connection()
                    if not self.is_sqlite:  # SQLite's connections are autocommit already
                        conn.driver_connection.autocommit = True  # type: ignore[union-attr]
                    self._version_reader.conn = conn
                cursor = conn.cursor()
                try:
                    cursor.execute(_READ_STATE_VERSION)
                    row = cursor.fetchone()
                finally:
                    cursor.close()
                return int(row[0]) if row is not None else 0
            except Exception as exc:
                self._version_reader.conn = None
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.invalidate()
                if attempt == 2:
                    raise StoreError(f"cannot read the state version from {self!r}: "
                                     f"{type(exc).__name__}: {exc}") from exc
        raise AssertionError("unreachable")

    def _bump(self, conn: Connection) -> None:
        updated = conn.execute(meta_table.update().where(meta_table.c.key == "state_version")
                               .values(value=sa.cast(sa.cast(meta_table.c.value, sa.Integer) + 1,
                                                     sa.Text)))
        if updated.rowcount == 0:
            conn.execute(meta_table.insert().values(key="state_version", value="1"))
        if not self.is_sqlite:  # delivered at commit to every LISTENing node (dihya.listen)
            conn.execute(sa.text("SELECT pg_notify(:channel, current_schema())"),
                         {"channel": NOTIFY_CHANNEL})

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
            if current is None:
                conn.execute(plugin_state_table.insert().values(name=name, **values))
            else:
                conn.execute(plugin_state_table.update().where(
                    plugin_state_table.c.name == name).values(**values))
            self._bump(conn)
        return True


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            # token hashes and switches: readable by the backend's user only
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
            os.close(fd)
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            # The driver's own implicit BEGIN is off; `_begin` below emits ours, so a
            # locked transaction can be `BEGIN IMMEDIATE` (SQLAlchemy's pysqlite recipe).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA secure_delete=ON")  # erased rows leave zeroes, not bytes
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            immediate = conn.get_execution_options().get("dihya_immediate")
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    return sa.create_engine(url, pool_pre_ping=True)
