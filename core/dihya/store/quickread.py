"""What a listing needs of a SQLite store (its id, schema version and kill switches), read
with the standard library's `sqlite3`, read-only, without SQLAlchemy (a third of a `dihya`
command's start).

Only the ordinary case is read here: a `sqlite:///PATH` URL whose path SQLAlchemy parses and
renders unchanged, a store at the schema version this core writes, no error. Anything else
(another database, a URL with a query or escapes, a missing, corrupt, locked-out, older or
newer store) returns None, and the caller opens the store with `dihya.store.Store`, which
creates, upgrades, or reports the problem in its own words: this path never decides an
error, and it never writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote

from dihya.store import SCHEMA_VERSION, SQLITE_BUSY_TIMEOUT_S

PREFIX = "sqlite:///"
# the characters of a path SQLAlchemy's URL parser (`make_url`) and its rendering leave as
# they are; any other character (`%`, `?`, `:`, `@`, non-ASCII...) takes the full path
_PLAIN = frozenset(" +-./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~")


def plain_sqlite_path(url: str) -> Path | None:
    """The file of `sqlite:///PATH` when PATH has only characters SQLAlchemy reads and
    renders verbatim (so `Store(url).path == Path(PATH)` and the URL is its own rendering);
    None for anything else."""
    if not url.startswith(PREFIX):
        return None
    path = url[len(PREFIX):]
    if not path or not _PLAIN.issuperset(path):
        return None
    return Path(path)


class ListingState(NamedTuple):
    """What a listing reads of the store."""

    store_id: str
    # name -> (reason code, reason) of each plugin switched off at run time
    switches: dict[str, tuple[str, str | None]]


def read_listing_state(path: Path) -> ListingState | None:
    """The store id and the plugins switched off, read in one read-only transaction; None
    if the store is not an ordinary readable store of this schema version (see above)."""
    import sqlite3  # only where there is a store to read

    try:
        conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True,
                               timeout=SQLITE_BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error:
        return None
    try:
        conn.execute("BEGIN")  # one snapshot for every read below
        meta = dict(conn.execute(
            "SELECT key, value FROM dihya_meta WHERE key IN ('schema_version', 'store_id')"
        ).fetchall())
        if meta.get("schema_version") != str(SCHEMA_VERSION) or not isinstance(
                meta.get("store_id"), str):
            return None
        rows = conn.execute("SELECT name, reason_code, reason FROM dihya_plugin_state "
                            "WHERE disabled IS 1").fetchall()
        conn.execute("COMMIT")
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return ListingState(meta["store_id"], {name: (code, reason) for name, code, reason in rows})
