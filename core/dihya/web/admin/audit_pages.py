"""The audit page: events by filter, page by page; exports of what is filtered; purges.

Admins only, like `/api/v1/audit`: events carry pseudonyms and notes (personal data). An
export of the filtered events is rendered as `dihya audit export` renders one and audited
as `audit.exported`; a subject's export (a GDPR access request) is the API's own call. A
purge (a subject, events by age, or a plugin's log records and notes) first shows what it
would remove and runs only when that page is confirmed, through the API's `purge_events`,
within the same floor (`[audit] http_purge_min_age_days`): below it, the same refusal.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any, Final

from flask import request
from werkzeug.wrappers import Response

from dihya.audit import EVENT_TYPES, OUTCOMES
from dihya.audit.gdpr import export
from dihya.audit.query import AuditFilter, export_filtered, purge_preview, search
from dihya.web.admin import guard
from dihya.web.admin.blueprint import console
from dihya.web.audit_api import (
    EXPORT_MEDIA_TYPES,
    FLOOR_KEY,
    PLUGIN_PATTERN,
    SUBJECT_PATTERN,
    BelowPurgeFloor,
    check_floor,
    floor_before,
    purge_events,
)

EXPORT_FORMATS: Final = ("jsonl", "csv", "json")
FILTER_FIELDS: Final = ("type", "plugin", "pseudonym", "outcome", "since", "until",
                        "tzoffset")
_PSEUDONYM: Final = re.compile(r"^p-[0-9a-f]{20}$")
_SUBJECT: Final = re.compile(SUBJECT_PATTERN)
_LOCAL_TIME: Final = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?$")
_FILENAME_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]+")
_PLUGIN: Final = re.compile(PLUGIN_PATTERN)
_SHOWN: Final = frozenset({"seq", "at", "type", "outcome", "actor", "target", "plugin",
                           "reason", "note", "event_id"})


def _when(text: str, offset_min: int, name: str, errors: list[str]) -> float | None:
    """A `datetime-local` value in the reader's time zone (`tzoffset`: minutes to add to
    get UTC, as the browser's `getTimezoneOffset()` says) as seconds since the epoch."""
    if not text:
        return None
    if not _LOCAL_TIME.match(text):
        errors.append(f"`{name}` must look like 2026-01-31T14:30.")
        return None
    try:
        local = dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)
    except ValueError:
        errors.append(f"`{name}` is not a date and time.")
        return None
    return (local + dt.timedelta(minutes=offset_min)).timestamp()


def parse_filter(values: Mapping[str, str]) -> tuple[AuditFilter, list[str]]:
    """The filter a form or query string asks for, and what in it was refused."""
    errors: list[str] = []
    kind = values.get("type") or None
    if kind is not None and kind not in EVENT_TYPES:
        errors.append("Unknown event type.")
        kind = None
    outcome = values.get("outcome") or None
    if outcome is not None and outcome not in OUTCOMES:
        errors.append("Unknown outcome.")
        outcome = None
    plugin = (values.get("plugin") or "").strip() or None
    if plugin is not None and len(plugin) > 200:
        errors.append("A plugin name has at most 200 characters.")
        plugin = None
    pseudonym = (values.get("pseudonym") or "").strip() or None
    if pseudonym is not None and not _PSEUDONYM.match(pseudonym):
        errors.append("A pseudonym looks like p- and 20 hex digits.")
        pseudonym = None
    try:
        offset = int(values.get("tzoffset") or 0)
    except ValueError:
        offset = 0
    offset = offset if -1000 < offset < 1000 else 0
    since = _when(values.get("since", ""), offset, "from", errors)
    until = _when(values.get("until", ""), offset, "to", errors)
    return AuditFilter(kind, plugin, pseudonym, outcome, since, until), errors


def _extra(row: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(row.items()) if k not in _SHOWN)


def _cursor(name: str) -> int | None:
    value = request.args.get(name, "")
    return int(value) if value.isdigit() else None


@console.get("/audit")
@guard.page("admin")
def audit() -> Response:
    """Events, newest first, by filter."""
    st = guard.state()
    flt, errors = parse_filter(request.args)
    log = st.auditor.log
    assert log is not None  # the server's auditor always writes to the store
    page = search(log, flt, before=_cursor("before"), after=_cursor("after"))
    raw = {k: request.args.get(k, "") for k in FILTER_FIELDS}
    plugins = sorted({r.name for r in st.snapshot().records}
                     | ({flt.plugin} if flt.plugin else set()))
    return guard.render("audit.html", page=page, rows=[(r, _extra(r)) for r in page.rows],
                        flt=flt, raw=raw, errors=errors, types=sorted(EVENT_TYPES),
                        outcomes=sorted(OUTCOMES), formats=EXPORT_FORMATS, plugins=plugins,
                        purge_floor=st.config.http_purge_min_age_days,
                        filter_query={k: v for k, v in raw.items() if v})


@console.post("/audit/export")
@guard.page("admin")
def export_events() -> Response:
    """What the filter matches (or one subject's events), as a file to download."""
    st, session = guard.state(), guard.current()
    fmt = request.form.get("format", "jsonl")
    if fmt not in EXPORT_FORMATS:
        raise guard.Denied(422, "Unknown format", "Export as jsonl, csv or json.")
    fields = {"role": session.role, "request_id": guard.request_id()}
    subject = request.form.get("subject", "").strip()
    if subject:
        if not _SUBJECT.match(subject):
            raise guard.Denied(422, "Not a subject id", "A subject is a token's name or a "
                               "CLI user's login: letters, digits and `_.@-`.")
        text = export(st.auditor, subject, fmt, actor=session.token.name, **fields)
        what = "subject"
    else:
        flt, errors = parse_filter(request.form)
        if errors:
            raise guard.Denied(422, "Filter refused", " ".join(errors))
        text = export_filtered(st.auditor, flt, fmt, actor=session.token.name, **fields)
        what = f"plugin-{flt.plugin}" if flt.plugin else ("filtered" if not flt.empty
                                                          else "all")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    name = _FILENAME_UNSAFE.sub("_", f"dihya-audit-{what}-{stamp}.{fmt}")
    response = Response(text, mimetype=EXPORT_MEDIA_TYPES[fmt])
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@console.post("/audit/purge")
@guard.page("admin")
def purge() -> Response:
    """Show what a purge would remove; with `confirm=yes`, remove it."""
    st, session = guard.state(), guard.current()
    subject = request.form.get("subject", "").strip() or None
    days_text = request.form.get("older_than_days", "").strip()
    plugin = request.form.get("plugin", "").strip() or None
    if [subject is not None, bool(days_text), plugin is not None].count(True) != 1:
        raise guard.Denied(422, "Purge what?", "Give one of a subject id, a number of "
                           "days or a plugin.")
    if plugin is not None and not _PLUGIN.match(plugin):
        raise guard.Denied(422, "Not a plugin name", "A plugin name is an entry point's "
                           "name: letters, digits and `_.-`, at most 200 characters.")
    days = None
    if subject is not None and not _SUBJECT.match(subject):
        raise guard.Denied(422, "Not a subject id", "A subject is a token's name or a CLI "
                           "user's login: letters, digits and `_.@-`.")
    if days_text:
        try:
            days = float(days_text)
        except ValueError:
            days = -1.0
        if not 0 <= days <= 36500:
            raise guard.Denied(422, "Not a number of days", "Give a number of days between "
                               "0 and 36500.")
    try:
        # the HTTP purge floor: a purge by age below it is refused (and audited) at once
        check_floor(st, session.token, guard.request_id(), days)
        if request.form.get("confirm") != "yes":
            log = st.auditor.log
            assert log is not None
            preview = purge_preview(log, subject=subject, older_than_days=days,
                                    plugin=plugin, before=floor_before(st))
            return guard.render("audit_purge.html", subject=subject, days=days_text,
                                plugin=plugin, preview=preview,
                                own=subject == session.token.name,
                                retention=st.config.audit_retention_days,
                                floor_days=st.config.http_purge_min_age_days,
                                floor_key=FLOOR_KEY)
        counts = purge_events(st, session.token, guard.request_id(), subject=subject,
                              older_than_days=days, plugin=plugin)
    except BelowPurgeFloor as exc:
        raise guard.Denied(403, "Below the purge floor", exc.message) from None
    if plugin is not None:
        logs, notes, events = counts["logs"], counts["notes"], counts["events"]
        notice = (f"Plugin {plugin} erased: {logs} log record{'s' if logs != 1 else ''} and "
                  f"{notes} note{'s' if notes != 1 else ''} removed; its {events} "
                  + ("event stays" if events == 1 else "events stay") + " in the hash chain.")
    elif subject is not None:
        notice = (f"Subject erased: {counts['events']} events made unlinkable, "
                  f"{counts['notes']} notes, {counts['tokens']} tokens and "
                  f"{counts['switches']} switch authors removed.")
    else:
        notice = f"Removed {counts['events']} events older than {days:g} days."
    if counts["kept_reason"]:
        notice += (f" Kept back: {counts['kept_events']} events"
                   + (f" and {counts['kept_logs']} log records" if plugin is not None else "")
                   + f". {counts['kept_reason']}")
    notice += f" Retention removed {counts['retention']} more."
    # erasing oneself deletes one's token: the next page finds the session ended
    return guard.done(notice, "console.audit")
