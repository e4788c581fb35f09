"""Plugins' own log records in the store (`dihya_plugin_logs`): write a generation's, read
one plugin's by time and level, remove one plugin's or the old ones.

The records arrive redacted and bounded (`dihya.pluginlog`); they are not part of the
audit chain, so removing them never breaks `dihya audit verify`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Final

import sqlalchemy as sa

from dihya.pluginlog import PluginLogRecord
from dihya.pluginlog.collect import LEVEL_NUMBERS
from dihya.store import Store, plugin_logs_table

DEFAULT_LIMIT: Final = 1000
_T = plugin_logs_table


def write(store: Store, records: Iterable[PluginLogRecord]) -> int:
    """Store `records` in one transaction; returns how many."""
    rows = [{"at": r.at, "plugin": r.plugin[:200], "version": (r.version or "")[:100] or None,
             "request_id": (r.request_id or "")[:64] or None, "level": r.level,
             "template": r.template, "error": r.error, "cut_bytes": r.cut_bytes,
             "args": json.dumps(r.args, ensure_ascii=False, allow_nan=False, default=str)}
            for r in records]
    if rows:
        with store.locked("plugin-logs") as conn:
            conn.execute(_T.insert(), rows)
    return len(rows)


def _record(row: Any) -> PluginLogRecord:
    return PluginLogRecord(at=row.at, plugin=row.plugin, version=row.version,
                           request_id=row.request_id, level=row.level, template=row.template,
                           args=json.loads(row.args), error=row.error,
                           cut_bytes=row.cut_bytes or 0)


def levels_from(level: str) -> list[str]:
    """The level names at `level` and above."""
    floor = LEVEL_NUMBERS[level.upper()]
    return [name for name, number in LEVEL_NUMBERS.items() if number >= floor]


def read(store: Store, plugin: str, *, since: float | None = None,
         level: str | None = None, limit: int = DEFAULT_LIMIT) -> list[PluginLogRecord]:
    """The newest `limit` records of `plugin` (at or after `since`, at `level` or above),
    oldest first."""
    where = [_T.c.plugin == plugin]
    if since is not None:
        where.append(_T.c.at >= since)
    if level is not None:
        where.append(_T.c.level.in_(levels_from(level)))
    query = sa.select(_T).where(*where).order_by(_T.c.at.desc(), _T.c.id.desc()).limit(limit)
    with store.begin() as conn:
        rows = conn.execute(query).all()
    return [_record(r) for r in reversed(rows)]


def every(store: Store, plugin: str) -> list[PluginLogRecord]:
    """Every record of `plugin`, oldest first (an export)."""
    query = sa.select(_T).where(_T.c.plugin == plugin).order_by(_T.c.at, _T.c.id)
    with store.begin() as conn:
        return [_record(r) for r in conn.execute(query)]


def count(store: Store, plugin: str, since: float | None = None) -> int:
    """How many records `plugin` has (at or after `since`, if given)."""
    where = [_T.c.plugin == plugin] + ([_T.c.at >= since] if since is not None else [])
    with store.begin() as conn:
        found: int = conn.execute(sa.select(sa.func.count()).select_from(_T).where(
            *where)).scalar_one()
    return found


def delete_plugin(store: Store, plugin: str, before: float | None = None) -> int:
    """Remove every record of `plugin` (made before `before`, if given); returns how many."""
    where = [_T.c.plugin == plugin] + ([_T.c.at < before] if before is not None else [])
    with store.locked("plugin-logs") as conn:
        removed: int = conn.execute(_T.delete().where(*where)).rowcount
    return removed


def delete_older_than(store: Store, cutoff: float) -> int:
    """Remove every record made before `cutoff` (seconds since the epoch)."""
    with store.locked("plugin-logs") as conn:
        removed: int = conn.execute(_T.delete().where(_T.c.at < cutoff)).rowcount
    return removed
