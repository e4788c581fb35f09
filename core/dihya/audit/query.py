"""Reading the audit log by filter: a page of events, every matching event, an export.

The operator console's audit page filters by event type, plugin, pseudonym (as actor or
target), outcome and time range, pages through the result newest first, and exports what
is filtered. Exports are rendered by `dihya.audit.gdpr.render` and audited as `audit.exported`,
like every other export; a purge is previewed here (what it would remove) and made by
`dihya.audit.gdpr`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any, Final

import attrs
import sqlalchemy as sa

from dihya.audit import Auditor
from dihya.audit.chain import AuditLog
from dihya.audit.gdpr import render
from dihya.store import audit_payload_table, audit_table, tokens_table

PAGE_SIZE: Final = 50
_COLUMNS: Final = ("at", "type", "outcome", "actor", "target")


@attrs.frozen
class AuditFilter:
    """Which events to show or export; a field left None does not filter."""

    type: str | None = None
    plugin: str | None = None
    pseudonym: str | None = None  # as actor or as target
    outcome: str | None = None
    since: float | None = None  # seconds since the epoch, inclusive
    until: float | None = None  # exclusive

    @property
    def empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in attrs.fields(AuditFilter))

    def matches(self, row: dict[str, Any]) -> bool:
        """The exact test, applied again to what the SQL prefilter returned."""
        return ((self.type is None or row.get("type") == self.type)
                and (self.plugin is None or row.get("plugin") == self.plugin)
                and (self.pseudonym is None
                     or self.pseudonym in (row.get("actor"), row.get("target")))
                and (self.outcome is None or row.get("outcome") == self.outcome)
                and (self.since is None or row["at"] >= self.since)
                and (self.until is None or row["at"] < self.until))


@attrs.frozen
class Page:
    """Events newest first, with the cursors of the pages around them."""

    rows: tuple[dict[str, Any], ...]
    total: int
    older: int | None  # pass as `before` for the next, older page
    newer: int | None  # pass as `after` for the previous, newer page


def _conditions(log: AuditLog, flt: AuditFilter) -> list[Any]:
    c = audit_table.c
    where: list[Any] = []
    if flt.type is not None:
        where.append(c.type == flt.type)
    if flt.outcome is not None:
        where.append(c.outcome == flt.outcome)
    if flt.pseudonym is not None:
        where.append(sa.or_(c.actor == flt.pseudonym, c.target == flt.pseudonym))
    if flt.since is not None:
        where.append(c.at >= flt.since)
    if flt.until is not None:
        where.append(c.at < flt.until)
    if flt.plugin is not None:
        # the other fields are canonical JSON (sorted keys, no spaces, quotes escaped
        # inside values), so this text occurs exactly when the plugin field is the name;
        # a substring search, not LIKE, which SQLite compares without case
        needle = '"plugin":' + json.dumps(flt.plugin, ensure_ascii=False)
        find = sa.func.instr if log.store.is_sqlite else sa.func.strpos
        where.append(find(c.fields, needle) > 0)
    return where


def _select(where: list[Any]) -> Any:
    return (sa.select(audit_table, audit_payload_table.c.payload)
            .outerjoin(audit_payload_table, audit_payload_table.c.seq == audit_table.c.seq)
            .where(*where))


def _row(r: Any) -> dict[str, Any]:
    """One stored event as exported, like the full export's rows (`event_id` included)."""
    out: dict[str, Any] = {"seq": r.seq, **{k: getattr(r, k) for k in _COLUMNS},
                           "event_id": r.event_id}
    out.update(json.loads(r.fields))
    if r.payload is not None:
        out["note"] = r.payload
    return {k: v for k, v in out.items() if v is not None}


def search(log: AuditLog, flt: AuditFilter, *, before: int | None = None,
           after: int | None = None, limit: int = PAGE_SIZE) -> Page:
    """One page of matching events, newest first: the newest ones, those just older than
    the event `before`, or those just newer than the event `after`."""
    log.flush()
    where = _conditions(log, flt)
    seq = audit_table.c.seq
    with log.store.begin() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(audit_table)
                             .where(*where)).scalar_one()
        if after is not None:
            query = _select([*where, seq > after]).order_by(seq.asc()).limit(limit + 1)
            found = [_row(r) for r in conn.execute(query)]
            more_newer = len(found) > limit
            rows = list(reversed(found[:limit]))
            more_older = bool(rows) and _exists(conn, [*where, seq < rows[-1]["seq"]])
        else:
            bound = [seq < before] if before is not None else []
            query = _select([*where, *bound]).order_by(seq.desc()).limit(limit + 1)
            found = [_row(r) for r in conn.execute(query)]
            more_older = len(found) > limit
            rows = found[:limit]
            more_newer = bool(rows) and _exists(conn, [*where, seq > rows[0]["seq"]])
    rows = [r for r in rows if flt.matches(r)]
    return Page(tuple(rows), total,
                older=rows[-1]["seq"] if rows and more_older else None,
                newer=rows[0]["seq"] if rows and more_newer else None)


def _exists(conn: Any, where: list[Any]) -> bool:
    return conn.execute(sa.select(audit_table.c.seq).where(*where).limit(1)).first() is not None


def matching(log: AuditLog, flt: AuditFilter) -> Iterator[dict[str, Any]]:
    """Every matching event, oldest first."""
    log.flush()
    query = _select(_conditions(log, flt)).order_by(audit_table.c.seq)
    with log.store.begin() as conn:
        for r in conn.execute(query):
            row = _row(r)
            if flt.matches(row):
                yield row


def export_filtered(auditor: Auditor, flt: AuditFilter, fmt: str, *, actor: str,
                    **fields: Any) -> str:
    """Every event `flt` matches, rendered like `dihya.audit.gdpr.export`; audited as
    `audit.exported` by `actor`, naming the plugin when the filter names one."""
    if auditor.log is None:
        raise RuntimeError("this auditor has no store: nothing to export")
    rows = list(matching(auditor.log, flt))
    auditor.record("audit.exported", "ok", subject=actor, count=len(rows), format=fmt,
                   plugin=flt.plugin, reason=None if flt.empty else "filtered", **fields)
    return render(rows, fmt)


def purge_preview(log: AuditLog, *, subject: str | None = None,
                  older_than_days: float | None = None,
                  plugin: str | None = None, before: float | None = None) -> dict[str, int]:
    """What a purge would remove, without removing anything or creating a pseudonym:
    for a subject, the events that would become unlinkable, their notes and tokens; by
    age, the events older than the cutoff; for a plugin, the events that name it (they
    stay), their notes and its log records (which go). With `before` (the HTTP purge
    floor, as `dihya.audit.gdpr` takes it), what a subject's or plugin's purge leaves
    because it is younger: `kept_events`, `kept_logs`."""
    log.flush()
    counts = {"events": 0, "notes": 0, "tokens": 0, "logs": 0, "kept_events": 0,
              "kept_logs": 0}
    if plugin is not None:
        from dihya.store.pluginlogs import count

        rows = list(matching(log, AuditFilter(plugin=plugin)))
        seqs = [row["seq"] for row in rows if before is None or row["at"] < before]
        counts["events"], counts["logs"] = len(rows), count(log.store, plugin)
        if before is not None:
            counts["kept_events"] = len(rows) - len(seqs)
            counts["kept_logs"] = count(log.store, plugin, since=before)
            counts["logs"] -= counts["kept_logs"]
        with log.store.begin() as conn:
            for start in range(0, len(seqs), 500):
                counts["notes"] += conn.execute(sa.select(sa.func.count()).select_from(
                    audit_payload_table).where(audit_payload_table.c.seq.in_(
                        seqs[start:start + 500]))).scalar_one()
        return counts
    with log.store.begin() as conn:
        if subject is not None:
            pseudonym = log.pseudonym_in(conn, subject, create=False)
            counts["tokens"] = conn.execute(sa.select(sa.func.count()).select_from(
                tokens_table).where(tokens_table.c.name == subject)).scalar_one()
            if pseudonym is not None:
                about = sa.or_(audit_table.c.actor == pseudonym,
                               audit_table.c.target == pseudonym)
                notes = audit_payload_table.c.actor == pseudonym
                counts["events"] = conn.execute(sa.select(sa.func.count()).select_from(
                    audit_table).where(about)).scalar_one()
                if before is not None:
                    counts["kept_events"] = conn.execute(sa.select(
                        sa.func.count()).select_from(audit_table).where(
                        about, audit_table.c.at >= before)).scalar_one()
                    if counts["kept_events"]:
                        counts["events"] = 0  # the pseudonym mapping stays
                    notes = sa.and_(notes, audit_payload_table.c.seq.in_(sa.select(
                        audit_table.c.seq).where(audit_table.c.at < before)))
                counts["notes"] = conn.execute(sa.select(sa.func.count()).select_from(
                    audit_payload_table).where(notes)).scalar_one()
        elif older_than_days is not None:
            # as `AuditLog.purge_older_than` does: the prefix of the chain up to the last
            # event older than the cutoff
            cutoff = time.time() - older_than_days * 86400
            last = conn.execute(sa.select(sa.func.max(audit_table.c.seq))
                                .where(audit_table.c.at < cutoff)).scalar_one_or_none()
            if last is not None:
                counts["events"] = conn.execute(sa.select(sa.func.count()).select_from(
                    audit_table).where(audit_table.c.seq <= last)).scalar_one()
    return counts
