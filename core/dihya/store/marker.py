"""The store marker: a small file beside the config that remembers which store the config's
state and audit events went to, so that a store deleted, emptied or replaced behind the
backend's back is reported as such instead of being taken for a new, empty one.

`.<config file name>.store-marker.json` in the config's directory records the store's
location (its URL without password), the random `store_id` the store was given
(`dihya_meta.store_id`), whether audit events were committed to it, and the head of the
chain the last successful `dihya audit verify` saw. It is written when dihya creates the
store and when a process first commits an event to it (once per process), and read by
every command that opens the store:

- the store is missing where the marker says one was: an error (CLI exit 1, server 503),
  never a new empty store;
- the store at that place has another `store_id`: it was replaced or recreated;
- `audit verify` finds no event where the marker says events were written, or a chain
  that no longer reaches the head it verified before: not "ok".

The marker is a tripwire for accidents and careless hands, not a defence against someone
who can write the config's directory (they can delete the marker too); it holds no secret
and no personal data. Deleting it on purpose is how an operator accepts a new, empty store.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Final

from dihya.store.quickread import plain_sqlite_path

SUFFIX: Final = ".store-marker.json"


def store_location(url: str) -> str:
    """How the marker names a store: its URL with the password hidden."""
    if plain_sqlite_path(url) is not None:
        return url  # what SQLAlchemy renders it as, without importing it (a listing's start)
    import sqlalchemy as sa  # only once a marker exists: most commands never need it

    return sa.engine.make_url(url).render_as_string(hide_password=True)


class StoreMarker:
    """The marker of one config file, for the store its config names."""

    def __init__(self, path: Path, store_url: str) -> None:
        self.path = path
        self.store_url = store_url

    @property
    def location(self) -> str:
        return store_location(self.store_url)

    @classmethod
    def for_config(cls, config_path: Path, store_url: str) -> StoreMarker:
        path = config_path.absolute()
        return cls(path.parent / f".{path.name}{SUFFIX}", store_url)

    def read(self) -> dict[str, Any] | None:
        """The marker's record, if it exists and is about this config's store."""
        try:
            data = json.loads(self.path.read_text("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("store") != self.location:
            return None  # about another store (the config's [store] url changed)
        return data

    @property
    def expected(self) -> bool:
        """A store was created (or written) at this location: its absence is an error."""
        return self.read() is not None

    def describe(self) -> str:
        record = self.read() or {}
        created = record.get("created_at")
        when = (time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(created))
                if isinstance(created, int | float) else "an unknown date")
        events = "audit events were written to it" if record.get("events") else \
            "it was created"
        return f"{self.path} records that {events} (store id {record.get('store_id')}, " \
               f"since {when})"

    def mismatch(self, store_id: str) -> str | None:
        """Why the store with id `store_id` is not the one the marker recorded; None if it
        is, or if the marker records nothing."""
        record = self.read()
        if record is None or record.get("store_id") in (None, store_id):
            return None
        return (f"the state store {self.location} is not the one {self.path} records (store "
                f"id {store_id}, expected {record.get('store_id')}): it was replaced or "
                "recreated, and what the old one held (tokens, switches, audit events) is not "
                "in it. Restore the original store; to keep this one on purpose, delete "
                f"{self.path}")

    # -- writes ----------------------------------------------------------------------------

    def note_created(self, store_id: str) -> None:
        self._update(store_id, created_at=time.time(), events=False, verified_head=None)

    def note_events(self, store_id: str) -> None:
        """Audit events were committed to the store `store_id` (written once)."""
        record = self.read()
        if record is not None and record.get("store_id") == store_id and record.get("events"):
            return
        self._update(store_id, events=True)

    def note_verified(self, store_id: str, head: str | None) -> None:
        """`audit verify` saw the chain end at `head` (`seq:hash`)."""
        record = self.read()
        if record is None and head is None:
            return  # nothing written yet: nothing to remember
        written = head is not None and not head.startswith("0:")
        self._update(store_id, verified_head=head if written else None,
                     events=True if written else None)

    def _update(self, store_id: str, **changes: Any) -> None:
        record = self.read()
        if record is None or record.get("store_id") != store_id:
            record = {"store": self.location, "store_id": store_id, "created_at": time.time(),
                      "events": False, "verified_head": None}
        for key, value in changes.items():
            if value is not None or key == "verified_head":
                record[key] = value
        self._write(record)

    def _write(self, record: dict[str, Any]) -> None:
        """Atomically: a reader sees the old marker or the new one, never half of one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(record, fh, indent=2, sort_keys=True)
                fh.write("\n")
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
