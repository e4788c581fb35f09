"""Why the state store failed, in words an operator can act on.

A database error names its cause badly ("OperationalError", "disk I/O error"), so every
error that reaches the store's door (`Store.begin`, `Store.locked`) is classified into a
`StoreFault` by what the driver and the operating system say, never by the text of a
message: SQLite's result codes (`SQLITE_READONLY`, `SQLITE_FULL`...), PostgreSQL's
SQLSTATE, and, where those are ambiguous (an I/O error, a connection that failed), a
question to the operating system itself: can the database file be opened for writing, is
there free space on its file system, does the server's port refuse a TCP connection.

`StoreUnavailable` carries the fault: the web layer answers it with 503 and
`Retry-After`, the CLI with exit 1, and `StoreHealth` logs it once per change of cause
(`"state store unavailable: disk full"`), never with personal data.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import sqlite3
import threading
import time
from enum import StrEnum
from pathlib import Path
from typing import Final

from dihya.reasons import FixedReasonError

log = logging.getLogger("dihya.store")


class StoreFault(StrEnum):
    """A reason code for an unavailable store; `describe()` is the sentence."""

    READ_ONLY = "store-read-only"
    DISK_FULL = "disk-full"
    FILE_DELETED = "database-file-deleted"
    FILE_REPLACED = "database-file-replaced"
    STORE_MISSING = "store-missing"
    STORE_REPLACED = "store-replaced"
    CONNECTION_REFUSED = "connection-refused"
    CONNECTION_LOST = "connection-lost"
    TIMED_OUT = "timed-out"
    BUSY = "store-busy"
    IO_ERROR = "disk-io-error"
    CORRUPT = "database-corrupt"
    AUTHENTICATION = "authentication-failed"
    TOO_MANY_CONNECTIONS = "too-many-connections"
    SERVER_UNAVAILABLE = "server-unavailable"
    SCHEMA_MISSING = "schema-missing"
    AUDIT_BACKLOG = "audit-backlog"
    ERROR = "store-error"

    def describe(self) -> str:
        return _WORDS[self]

    def advice(self) -> str:
        return _ADVICE[self]

    @property
    def transient(self) -> bool:
        """Worth retrying at once: the connection, not the data or the disk, failed."""
        return self in _TRANSIENT


_WORDS: Final = {
    StoreFault.READ_ONLY: "store is read-only",
    StoreFault.DISK_FULL: "disk full",
    StoreFault.FILE_DELETED: "database file deleted",
    StoreFault.FILE_REPLACED: "database file replaced",
    StoreFault.STORE_MISSING: "database file missing",
    StoreFault.STORE_REPLACED: "store replaced (not the one audit events were written to)",
    StoreFault.CONNECTION_REFUSED: "connection refused",
    StoreFault.CONNECTION_LOST: "connection lost",
    StoreFault.TIMED_OUT: "store timed out",
    StoreFault.BUSY: "store is locked by another process",
    StoreFault.IO_ERROR: "disk I/O error",
    StoreFault.CORRUPT: "database file corrupt (or not a database)",
    StoreFault.AUTHENTICATION: "authentication to the database failed",
    StoreFault.TOO_MANY_CONNECTIONS: "too many connections to the database",
    StoreFault.SERVER_UNAVAILABLE: "database server starting up or shutting down",
    StoreFault.SCHEMA_MISSING: "the store's tables are missing",
    StoreFault.AUDIT_BACKLOG: "audit writes are backed up",
    StoreFault.ERROR: "store error",
}
_ADVICE: Final = {
    StoreFault.READ_ONLY: "make the database file, its -wal/-shm files and their directory "
                          "writable by the server's user (lsattr/chattr -i, the mount's "
                          "options, PostgreSQL's default_transaction_read_only or a standby)",
    StoreFault.DISK_FULL: "free space on the file system that holds the store",
    StoreFault.FILE_DELETED: "put the same file back (it is still open: `ls -l "
                             "/proc/<pid>/fd` of a server worker finds it) or restore a "
                             "backup and restart the server",
    StoreFault.FILE_REPLACED: "put the original file back, or restart the server to use "
                              "the new one",
    StoreFault.STORE_MISSING: "restore the store from a backup and restart the server",
    StoreFault.STORE_REPLACED: "restore the original store; to start over with this one on "
                               "purpose, delete the store marker named by `dihya audit verify`",
    StoreFault.CONNECTION_REFUSED: "start the database server, or check [store] url",
    StoreFault.CONNECTION_LOST: "check the database server and the network to it",
    StoreFault.TIMED_OUT: "check the database server's load and the network to it",
    StoreFault.BUSY: "find the process holding the store's write lock",
    StoreFault.IO_ERROR: "check the disk and the kernel log",
    StoreFault.CORRUPT: "restore the store from a backup",
    StoreFault.AUTHENTICATION: "check the credentials in [store] url",
    StoreFault.TOO_MANY_CONNECTIONS: "raise the server's max_connections or run fewer workers",
    StoreFault.SERVER_UNAVAILABLE: "wait for the database server, or start it",
    StoreFault.SCHEMA_MISSING: "restore the store, or point [store] url at the right schema",
    StoreFault.AUDIT_BACKLOG: "the store is too slow for the load: check it",
    StoreFault.ERROR: "see the database server's log",
}
_TRANSIENT: Final = frozenset({StoreFault.CONNECTION_LOST, StoreFault.CONNECTION_REFUSED,
                               StoreFault.TIMED_OUT, StoreFault.BUSY,
                               StoreFault.SERVER_UNAVAILABLE, StoreFault.ERROR})

#: What a client is told to wait before retrying, per fault (seconds).
RETRY_AFTER_S: Final = 5


class StoreError(FixedReasonError):
    """The store cannot be used: unreachable, missing, or an unknown schema; the message
    says which and what to do."""

    REASON = "store-unavailable"


class StoreUnavailable(StoreError):
    """The store failed for a reason named by `fault`; the message is a sentence."""

    def __init__(self, fault: StoreFault, where: str = "") -> None:
        self.fault = fault
        prefix = f"the state store {where} is unavailable" if where else \
            "the state store is unavailable"
        super().__init__(f"{prefix}: {fault.describe()}: {fault.advice()}")
        self.reason = fault.value


class StoreMissing(StoreUnavailable):
    """No store where one was named (and creating one was not asked for)."""

    def __init__(self, message: str) -> None:
        self.fault = StoreFault.STORE_MISSING
        StoreError.__init__(self, message)
        self.reason = self.fault.value


# SQLite primary result codes (the low byte of an extended code)
_SQLITE_PRIMARY: Final = {
    sqlite3.SQLITE_READONLY: StoreFault.READ_ONLY,
    sqlite3.SQLITE_FULL: StoreFault.DISK_FULL,
    sqlite3.SQLITE_BUSY: StoreFault.BUSY,
    sqlite3.SQLITE_LOCKED: StoreFault.BUSY,
    sqlite3.SQLITE_CORRUPT: StoreFault.CORRUPT,
    sqlite3.SQLITE_NOTADB: StoreFault.CORRUPT,
}
# an I/O error, a file that cannot be opened or a refused permission: ask the OS why
_SQLITE_ASK_OS: Final = frozenset({sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN,
                                   sqlite3.SQLITE_PERM})
# PostgreSQL SQLSTATEs (and classes, by their first two characters)
_SQLSTATE: Final = {
    "25006": StoreFault.READ_ONLY,  # read_only_sql_transaction (a standby, or the setting)
    "53100": StoreFault.DISK_FULL,
    "53300": StoreFault.TOO_MANY_CONNECTIONS,
    "57P01": StoreFault.SERVER_UNAVAILABLE,  # admin_shutdown
    "57P02": StoreFault.SERVER_UNAVAILABLE,  # crash_shutdown
    "57P03": StoreFault.SERVER_UNAVAILABLE,  # cannot_connect_now
    "57014": StoreFault.TIMED_OUT,  # query_canceled: statement or lock timeout
    "55P03": StoreFault.TIMED_OUT,  # lock_not_available
    "28000": StoreFault.AUTHENTICATION,
    "28P01": StoreFault.AUTHENTICATION,
    "3D000": StoreFault.CONNECTION_REFUSED,  # the database does not exist
    "42P01": StoreFault.SCHEMA_MISSING,  # undefined_table
    "58030": StoreFault.IO_ERROR,
}
_SQLSTATE_CLASS: Final = {"08": StoreFault.CONNECTION_LOST, "53": StoreFault.DISK_FULL,
                          "57": StoreFault.SERVER_UNAVAILABLE, "40": StoreFault.BUSY}


def classify(exc: BaseException, sqlite_path: Path | None = None,
             server: tuple[str, int] | None = None) -> StoreFault:
    """The fault behind `exc` (an exception from SQLAlchemy, a driver or the OS), asking the
    OS about `sqlite_path` or the database `server` (host, port) where codes are ambiguous."""
    if isinstance(exc, StoreUnavailable):
        return exc.fault
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        fault = _classify_one(current, sqlite_path, server)
        if fault is not None:
            return fault
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return StoreFault.ERROR


def _classify_one(exc: BaseException, sqlite_path: Path | None,
                  server: tuple[str, int] | None) -> StoreFault | None:
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is None:
            return None
        primary = code & 0xFF
        if primary in _SQLITE_PRIMARY:
            return _SQLITE_PRIMARY[primary]
        if primary in _SQLITE_ASK_OS:
            return sqlite_file_fault(sqlite_path) or StoreFault.IO_ERROR
        return None
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and exc.__class__.__module__.startswith("psycopg"):
        return _SQLSTATE.get(sqlstate) or _SQLSTATE_CLASS.get(sqlstate[:2])
    if exc.__class__.__module__.startswith("psycopg") and exc.__class__.__name__ in (
            "OperationalError", "InterfaceError", "ConnectionTimeout"):
        # no SQLSTATE: the connection itself failed; the TCP port says how
        return probe_server(server)
    if type(exc).__name__ == "TimeoutError" and exc.__class__.__module__.startswith(
            "sqlalchemy"):
        return StoreFault.TIMED_OUT  # the connection pool had no connection to give
    if isinstance(exc, OSError):
        return _errno_fault(exc.errno)
    return None


def _errno_fault(number: int | None) -> StoreFault | None:
    if number in (errno.EROFS, errno.EPERM, errno.EACCES):
        return StoreFault.READ_ONLY
    if number in (errno.ENOSPC, errno.EDQUOT):
        return StoreFault.DISK_FULL
    if number == errno.ENOENT:
        return StoreFault.FILE_DELETED
    if number == errno.EIO:
        return StoreFault.IO_ERROR
    return None


def sqlite_file_fault(path: Path | None) -> StoreFault | None:
    """Ask the OS what stands in the way of writing the SQLite file at `path`: missing,
    not writable (read-only mount, immutable, permissions), or no free space left."""
    if path is None:
        return None
    for candidate in (path, Path(f"{path}-wal")):
        try:
            # opening for writing changes nothing, and fails as a write would
            fd = os.open(candidate, os.O_WRONLY | os.O_APPEND)
        except FileNotFoundError:
            if candidate == path:
                return StoreFault.FILE_DELETED
            continue
        except OSError as exc:
            fault = _errno_fault(exc.errno)
            if fault is not None:
                return fault
            continue
        os.close(fd)
    try:
        fs = os.statvfs(path.parent)
    except OSError:
        return None
    # what an unprivileged writer could still use; root may also get the reserved blocks
    if fs.f_bavail * fs.f_frsize < 64 * 1024 or (os.geteuid() == 0 and fs.f_bfree == 0):
        return StoreFault.DISK_FULL
    return None


def probe_server(server: tuple[str, int] | None, timeout: float = 1.0) -> StoreFault:
    """Connect to the database server's TCP port: refused, timed out, or reachable (then
    the connection was lost, or the server refused it in a way libpq reported)."""
    if server is None:
        return StoreFault.CONNECTION_LOST
    try:
        with socket.create_connection(server, timeout=timeout):
            return StoreFault.CONNECTION_LOST
    except ConnectionRefusedError:
        return StoreFault.CONNECTION_REFUSED
    except TimeoutError:
        return StoreFault.TIMED_OUT
    except OSError:
        return StoreFault.CONNECTION_REFUSED


class StoreHealth:
    """What this process last saw of the store: the fault of the last failed transaction
    (until one succeeds), logged once per change of cause and again every `REPEAT_S`."""

    REPEAT_S: Final = 30.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.fault: StoreFault | None = None
        self.since: float | None = None  # time.time() of the first failure of this fault
        self._logged_at = 0.0

    def failed(self, fault: StoreFault) -> None:
        now = time.monotonic()
        with self._lock:
            changed = fault != self.fault
            if changed:
                self.fault, self.since = fault, time.time()
            if not changed and now - self._logged_at < self.REPEAT_S:
                return
            self._logged_at = now
        # the sentence comes from a fixed table: no data from the request or the database
        log.error("state store unavailable: " + fault.describe(),
                  extra={"reason": fault.value})

    def succeeded(self) -> None:
        if self.fault is None:
            return
        with self._lock:
            fault, self.fault, self.since = self.fault, None, None
        if fault is not None:
            log.warning("state store available again after: " + fault.describe(),
                        extra={"reason": fault.value})
