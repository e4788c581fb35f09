"""The status last audited for each plugin, so that an event is recorded once per change.

Every server worker builds its registry when it starts, and every worker and node rebuilds
on a reload: auditing what each build saw would write the same `plugin.discovered` and
`plugin.refused` events again and again (1,901 events per worker start with 1,000
plugins installed). `note_changes` compares what a build saw with `dihya_plugin_seen`
under the store's write lock, records the differences there and returns them: the caller
audits exactly those, so of several workers starting at once only the first audits a change.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dihya.store import Store, plugin_seen_table


@attrs.frozen
class SeenState:
    """What a build saw of one plugin: its version and files, its status and reason."""

    name: str
    version: str
    fingerprint: str | None
    status: str
    reason: str | None


@attrs.frozen
class SeenChange:
    """How a plugin changed since it was last audited; `before` is None the first time."""

    now: SeenState
    before: SeenState | None

    @property
    def new_version(self) -> bool:
        """First seen, or seen with another version or other files (files not hashed, as
        those of a plugin refused before the gate looked at them, compare as unknown)."""
        before, now = self.before, self.now
        if before is None or before.version != now.version:
            return True
        return None not in (before.fingerprint, now.fingerprint) \
            and before.fingerprint != now.fingerprint

    @property
    def new_status(self) -> bool:
        return self.before is None or (self.before.status, self.before.reason) != (
            self.now.status, self.now.reason)


def note_changes(store: Store, states: Sequence[SeenState]) -> list[SeenChange]:
    """Record `states` as the last seen and return those that differ from the record.

    Plugins not in `states` keep their record: another node may have them installed.
    """
    table = plugin_seen_table
    with store.begin() as conn:  # the usual case, nothing changed: a read, no write lock
        if not _changes(conn, states):
            return []
    with store.locked("plugin-seen") as conn:
        changes = _changes(conn, states)  # again under the lock: another worker may have won
        now = time.time()
        new = [{**attrs.asdict(c.now), "at": now} for c in changes if c.before is None]
        changed = [{**attrs.asdict(c.now), "key": c.now.name, "at": now}
                   for c in changes if c.before is not None]
        if new:
            conn.execute(table.insert(), new)
        if changed:
            conn.execute(table.update().where(table.c.name == sa.bindparam("key")).values(
                version=sa.bindparam("version"), fingerprint=sa.bindparam("fingerprint"),
                status=sa.bindparam("status"), reason=sa.bindparam("reason"),
                at=sa.bindparam("at")), [{k: v for k, v in c.items() if k != "name"}
                                         for c in changed])
    return changes


def _changes(conn: Connection, states: Sequence[SeenState]) -> list[SeenChange]:
    # compared as plain tuples (the fields of `SeenState`, in order): a reload with nothing
    # changed compares every plugin and makes no object per row
    c = plugin_seen_table.c
    rows = conn.execute(sa.select(c.name, c.version, c.fingerprint, c.status, c.reason))
    known = {row[0]: tuple(row) for row in rows}
    changes = []
    for s in states:
        before = known.get(s.name)
        if before != (s.name, s.version, s.fingerprint, s.status, s.reason):
            changes.append(SeenChange(s, None if before is None else SeenState(*before)))
    return changes
