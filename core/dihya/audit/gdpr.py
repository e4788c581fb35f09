"""GDPR operations on the audit log, shared by the CLI and the HTTP API: export a
subject's events (or all), erase a subject, remove old events, apply retention; and per
plugin: export its audit events with its own log records, purge them.

Each operation is itself audited through `Auditor.record`, with the subject only as a
pseudonym (`target`, for an export) or not at all (a purge).
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterable
from typing import Any, Final

from dihya.audit import FIELDS, Auditor, iso_time
from dihya.audit.chain import AuditLog

DAY_S: Final = 86400.0
#: `at_iso` is `at` (seconds since the epoch, what the hash chain covers) as ISO 8601.
CSV_COLUMNS: Final = ("seq", *FIELDS, "note", "at_iso")  # at_iso last: columns keep their place
#: What makes a spreadsheet read a cell as a formula (`=`, `+`, `-`, `@`, and a tab or a
#: carriage return in front of one): a text cell starting so gets a leading `'`.
FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r")


def _log(auditor: Auditor) -> AuditLog:
    if auditor.log is None:
        raise RuntimeError("this auditor has no store: nothing to export or purge")
    return auditor.log


def with_iso(row: dict[str, Any]) -> dict[str, Any]:
    """The row with `at_iso` (its time as ISO 8601, UTC) beside the numeric `at`."""
    at = row.get("at")
    return {**row, "at_iso": iso_time(at)} if isinstance(at, int | float) else row


def _cell(value: Any) -> Any:
    """A CSV cell that a spreadsheet shows as text (CSV injection): plugin names come from
    any installed distribution's entry points and notes are free text, so a string that
    would start a formula is written with a leading `'`. Numbers are left as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def render(rows: Iterable[dict[str, Any]], fmt: str) -> str:
    """Rows as a JSON array (one event per line), JSON Lines (one object per line, no
    array: a stream a log tool reads line by line) or CSV with a fixed header (a text cell
    that would start a spreadsheet formula gets a leading `'`); each row with `at_iso`
    beside `at`."""
    rows = (with_iso(row) for row in rows)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(v) for k, v in row.items()})
        return out.getvalue()
    lines = [json.dumps(row, sort_keys=True, ensure_ascii=False) for row in rows]
    if fmt == "jsonl":
        return "".join(line + "\n" for line in lines)
    return "[\n" + ",\n".join(lines) + "\n]\n" if lines else "[]\n"


def export(auditor: Auditor, subject: str | None, fmt: str, *, actor: str,
           **fields: Any) -> str:
    """Every event about `subject` (or every event), rendered; audited as
    `audit.exported` by `actor`."""
    rows = list(_log(auditor).rows(subject))
    # an unknown subject gets no pseudonym: exporting must not create one
    auditor.record("audit.exported", "ok", subject=actor, target=subject if rows else None,
                   count=len(rows),
                   format=fmt, **fields)
    return render(rows, fmt)


def purge_subject(auditor: Auditor, subject: str, *, actor: str, before: float | None = None,
                  **fields: Any) -> dict[str, int]:
    """Erase `subject` (see `AuditLog.purge_subject`, `before` included: the HTTP purge
    floor, None for the CLI); audited as `audit.purged`."""
    counts = _log(auditor).purge_subject(subject, before)
    auditor.record("audit.purged", "ok", subject=actor, count=counts["events"],
                   reason="subject", **fields)
    return counts


def purge_older_than(auditor: Auditor, days: float, *, actor: str, **fields: Any) -> int:
    """Remove events older than `days`; audited as `audit.purged`."""
    removed = _log(auditor).purge_older_than(days)
    auditor.record("audit.purged", "ok", subject=actor, count=removed, days=days,
                   reason="older-than", **fields)
    return removed


def apply_retention(auditor: Auditor, days: float, interval_s: float = DAY_S,
                    plugin_log_days: float | None = None) -> int | None:
    """Remove events older than the retention period, at most once per `interval_s` for
    the whole store (whichever worker comes first); audited as `audit.retention`.
    With `plugin_log_days`, plugins' log records older than that go too (when there were
    any, a second `audit.retention` event, `reason: plugin-logs`). None when another run was recent
    enough."""
    log = _log(auditor)
    if not log.retention_due(interval_s):
        return None
    removed = log.purge_older_than(days)
    auditor.record("audit.retention", "ok", count=removed, days=days)
    if plugin_log_days is not None:
        from dihya.store.pluginlogs import delete_older_than

        logs = delete_older_than(log.store, time.time() - plugin_log_days * DAY_S)
        if logs:
            auditor.record("audit.retention", "ok", count=logs, days=plugin_log_days,
                           reason="plugin-logs")
    return removed


#: The formats of a per-plugin export (events and log records are two kinds of row).
PLUGIN_FORMATS: Final = ("json", "jsonl")


def plugin_export(auditor: Auditor, plugin: str, fmt: str, *, actor: str,
                  **fields: Any) -> str:
    """The audit events that name `plugin` and its log records: as JSON, an object
    `{"plugin", "events", "logs"}`; as JSON Lines, one row per line with its `kind`
    (`event` or `log`). Audited as `audit.exported` (`reason: plugin`)."""
    from dihya.audit.query import AuditFilter, matching
    from dihya.store.pluginlogs import every

    if fmt not in PLUGIN_FORMATS:
        raise ValueError(f"a per-plugin export is JSON or JSON Lines, not {fmt}")
    log = _log(auditor)
    # each event as in the full export: `event_id`, and `at_iso` beside `at`
    events = [with_iso(row) for row in matching(log, AuditFilter(plugin=plugin))]
    logs = [with_iso(r.to_json()) for r in every(log.store, plugin)]
    auditor.record("audit.exported", "ok", subject=actor, count=len(events) + len(logs),
                   format=fmt, plugin=plugin, reason="plugin", **fields)
    if fmt == "json":
        return json.dumps({"plugin": plugin, "events": events, "logs": logs},
                          sort_keys=True, ensure_ascii=False, indent=1) + "\n"
    rows = [{"kind": "event", **e} for e in events] + [{"kind": "log", **r} for r in logs]
    return render(rows, "jsonl")


def purge_plugin(auditor: Auditor, plugin: str, *, actor: str, before: float | None = None,
                 **fields: Any) -> dict[str, int]:
    """Erase what is kept about `plugin`: every log record of it, and the notes (free
    text) of the audit events that name it. The events themselves stay in the hash chain
    (they hold no personal data; removing one from the middle would break the chain), so
    `dihya audit verify` still passes. Audited as `audit.purged` (`reason: plugin`).

    With `before` (seconds since the epoch: the HTTP purge floor), only the log records
    and notes made before it go; `kept_events` and `kept_logs` count the events (whose
    notes stay) and log records at or after it."""
    from dihya.audit.query import AuditFilter, matching
    from dihya.store import audit_payload_table
    from dihya.store.pluginlogs import count, delete_plugin

    log = _log(auditor)
    rows = list(matching(log, AuditFilter(plugin=plugin)))
    seqs = [row["seq"] for row in rows if before is None or row["at"] < before]
    notes = 0
    with log.store.locked("audit") as conn:
        for start in range(0, len(seqs), 500):
            notes += conn.execute(audit_payload_table.delete().where(
                audit_payload_table.c.seq.in_(seqs[start:start + 500]))).rowcount
    logs = delete_plugin(log.store, plugin, before)
    log.compact()
    auditor.record("audit.purged", "ok", subject=actor, count=logs, plugin=plugin,
                   reason="plugin", **fields)
    counts = {"events": len(rows), "notes": notes, "tokens": 0, "switches": 0, "logs": logs}
    if before is not None:
        counts.update(kept_events=len(rows) - len(seqs),
                      kept_logs=count(log.store, plugin, since=before))
    return counts
