"""The fleet's count of each plugin's consecutive hook failures, and the quarantine it triggers.

Every server worker of every node that shares the store adds its generations' hook outcomes
to one row per plugin (`dihya_plugin_failures`), so a plugin is quarantined once, for the
whole fleet, after `[sandbox] quarantine_after` failures in a row, wherever they happened.
It stays cheap: a generation writes only when a hook failed, or when one succeeded while the
plugin has failures counted (`failing` tells which: one small read of the plugins that
succeeded, so a success right after another worker's failure resets the count too). Each
write takes the store's `switches` lock, so two workers never lose a count, and the write
that reaches the limit records the quarantine in the same transaction (and bumps the state
version): exactly one worker quarantines, exactly at the limit. Failures of a plugin that is
already switched off are not counted; any switch (an admin's disable or enable, a
quarantine, its reset) starts the count afresh (`Store.set_plugin_disabled`).

A sandbox abuse (`dihya.sandbox.pool`: a worker that exited between calls unasked, or used
CPU while idle) counts as a failed call: `charge` turns that many of the plugin's ok calls
of the generation into failures, so an abuser whose calls all answer is still counted.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Final

import attrs
import sqlalchemy as sa

from dihya.store import Store, plugin_failures_table, plugin_state_table

QUARANTINED: Final = "quarantined"


@attrs.frozen
class Outcomes:
    """What one batch of hook calls (a generation) did to a plugin's count: `reset` when a
    call succeeded, then `failed` calls failed after the last success."""

    reset: bool = False
    failed: int = 0

    def then(self, ok: bool) -> Outcomes:
        return Outcomes(True, 0) if ok else Outcomes(self.reset, self.failed + 1)


def batch(outcomes: Iterable[tuple[str, bool]]) -> dict[str, Outcomes]:
    """Fold (plugin, ok) hook outcomes, in call order, into one change per plugin."""
    changes: dict[str, Outcomes] = {}
    for name, ok in outcomes:
        changes[name] = changes.get(name, Outcomes()).then(ok)
    return changes


def charge(outcomes: Iterable[tuple[str, bool]],
           abuses: Mapping[str, int]) -> list[tuple[str, bool]]:
    """`outcomes` with each plugin's sandbox abuses counted as failed calls: the first as
    many of its ok calls become failures (a call served by a fresh worker because the last
    one was abused is not a success), and those left over are added as failures."""
    left = {n: c for n, c in abuses.items() if c > 0}
    charged: list[tuple[str, bool]] = []
    for name, ok in outcomes:
        if ok and left.get(name):
            left[name] -= 1
            ok = False
        charged.append((name, ok))
    charged += [(name, False) for name, count in sorted(left.items()) for _ in range(count)]
    return charged


_FAILING: Final = (f"SELECT name FROM {plugin_failures_table.name} "
                   "WHERE consecutive > 0")


def failing(store: Store, names: Iterable[str] | None = None) -> frozenset[str]:
    """The plugins (of `names`, or all) whose count of failures in a row is not zero.

    Read on every generation that ran a plugin (`note_outcomes`): one plain SELECT on the
    connection the request path keeps (`Store.read_rows`), fresh like any read there, not
    a SQLAlchemy statement built, compiled and run in a pooled transaction (≈ 0.35 ms of
    a generation's CPU, issue #16)."""
    if names is None:
        return frozenset(row[0] for row in store.read_rows(_FAILING, {}))
    wanted = sorted(set(names))
    if not wanted:
        return frozenset()
    params = {f"n{i}": name for i, name in enumerate(wanted)}
    text = f"{_FAILING} AND name IN ({', '.join(':' + key for key in params)})"
    return frozenset(row[0] for row in store.read_rows(text, params))


def counts(store: Store) -> dict[str, int]:
    """Every plugin's count of failures in a row (for reports and tests)."""
    with store.begin() as conn:
        rows = conn.execute(sa.select(plugin_failures_table.c.name,
                                      plugin_failures_table.c.consecutive)).all()
    return {r.name: int(r.consecutive) for r in rows}


def record(store: Store, changes: Mapping[str, Outcomes], limit: int,
           actor: str = "dihya") -> dict[str, int]:
    """Add `changes` to the fleet's counts in one locked transaction; quarantine each plugin
    whose count reaches `limit`. Returns the quarantined plugins with the count that did it.
    """
    quarantined: dict[str, int] = {}
    if not changes:
        return quarantined
    now = time.time()
    table = plugin_failures_table
    with store.locked("switches") as conn:
        names = sorted(changes)
        off = set(conn.execute(sa.select(plugin_state_table.c.name).where(
            plugin_state_table.c.name.in_(names),
            plugin_state_table.c.disabled.is_(True))).scalars())
        switches = set(conn.execute(sa.select(plugin_state_table.c.name).where(
            plugin_state_table.c.name.in_(names))).scalars())
        current = {r.name: int(r.consecutive) for r in conn.execute(
            sa.select(table.c.name, table.c.consecutive).where(table.c.name.in_(names)))}
        for name in names:
            change = changes[name]
            if name in off:
                continue  # switched off meanwhile: its late failures do not count
            before = current.get(name)
            count = (0 if change.reset else (before or 0)) + change.failed
            if count >= limit:
                quarantined[name] = count
                count = 0
                store.write_switch(conn, name, name in switches, {
                    "disabled": True, "reason_code": QUARANTINED,
                    "reason": f"{limit} consecutive failed calls or sandbox violations",
                    "actor": actor, "at": now})
            if before is None:
                if count:
                    conn.execute(table.insert().values(name=name, consecutive=count, at=now))
            elif before != count:
                conn.execute(table.update().where(table.c.name == name).values(
                    consecutive=count, at=now))
        if quarantined:
            store.bump_in(conn)
    return quarantined
