"""`/api/v1/audit`: export and purge the audit log over HTTP (admin only), by subject, by
age or by plugin (its events and its own log records).

The same operations as `dihya audit export|purge` (`dihya.audit.gdpr`), each itself audited
with the admin as actor and the subject only as a pseudonym (export) or not at all (purge).

Over HTTP (here and in the console) a purge stops at a floor, `[audit]
http_purge_min_age_days` (default 1): a purge by age below it is refused (403, audited), a
purge by subject or plugin leaves what is younger, so that a stolen admin token cannot
erase the record of what it just did. `dihya audit purge`, on the server, is not limited.
"""

from __future__ import annotations

import time
from typing import Any, Final

from flask import Blueprint, Response, g, jsonify, request

from dihya.audit import FORMATS
from dihya.audit.gdpr import (
    DAY_S,
    PLUGIN_FORMATS,
    apply_retention,
    export,
    plugin_export,
    purge_older_than,
    purge_plugin,
    purge_subject,
)
from dihya.reasons import FixedReasonError, ProblemType
from dihya.store.tokens import TokenInfo
from dihya.web.api import json_body, validate_body
from dihya.web.auth import current_token, require, state
from dihya.web.problems import ApiProblem
from dihya.web.state import DihyaState

#: What a subject id looks like: a token's name or a CLI user's login (short, ASCII).
SUBJECT_PATTERN: Final = r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,127}$"
#: What a plugin's (entry-point) name looks like here.
PLUGIN_PATTERN: Final = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}$"

EXPORT_QUERY: Final[dict[str, Any]] = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "subject": {"type": "string", "pattern": SUBJECT_PATTERN, "maxLength": 128,
                    "description": "Only events about this subject (a token's name or a CLI "
                                   "user); left out: every event."},
        "plugin": {"type": "string", "pattern": PLUGIN_PATTERN, "maxLength": 200,
                   "description": "The audit events that name this plugin and its own log "
                                  "records, as `{\"plugin\", \"events\", \"logs\"}` "
                                  "(format json) or JSON Lines rows with a `kind` (format "
                                  "jsonl)."},
        "format": {"type": "string", "enum": list(FORMATS), "default": "json"},
    },
    "not": {"required": ["subject", "plugin"]},
}
PURGE_BODY: Final[dict[str, Any]] = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "subject": {"type": "string", "pattern": SUBJECT_PATTERN, "maxLength": 128,
                    "description": "Erase this subject: pseudonym, notes, tokens."},
        "older_than_days": {"type": "number", "minimum": 0, "maximum": 36500,
                            "description": "Remove events older than this many days."},
        "plugin": {"type": "string", "pattern": PLUGIN_PATTERN, "maxLength": 200,
                   "description": "Erase what is kept about this plugin: its log records "
                                  "and the notes of its audit events (the events stay in "
                                  "the chain)."},
    },
    "oneOf": [{"required": ["subject"]}, {"required": ["older_than_days"]},
              {"required": ["plugin"]}],
}

#: The media type of an export in each format.
EXPORT_MEDIA_TYPES: Final = {"json": "application/json", "jsonl": "application/jsonl",
                             "csv": "text/csv"}

audit_api = Blueprint("audit", __name__, url_prefix="/api/v1/audit")


@audit_api.get("/export")
@require("admin")
def export_audit() -> Response:
    query = request.args.to_dict()
    validate_body(EXPORT_QUERY, query)
    fmt = query.get("format", "json")
    token = current_token()
    plugin = query.get("plugin")
    if plugin is not None:
        if fmt not in PLUGIN_FORMATS:
            raise ApiProblem(422, ProblemType.VALIDATION, "Unprocessable Content",
                             "A per-plugin export holds events and log records: ask for "
                             "format json or jsonl.",
                             errors=[{"pointer": "/format", "detail": "must be json or jsonl "
                                      "with plugin"}])
        text = plugin_export(state().auditor, plugin, fmt, actor=token.name,
                             role=token.role, request_id=g.request_id)
        return Response(text, status=200, mimetype=EXPORT_MEDIA_TYPES[fmt])
    text = export(state().auditor, query.get("subject"), fmt, actor=token.name,
                  role=token.role, request_id=g.request_id)
    return Response(text, status=200, mimetype=EXPORT_MEDIA_TYPES[fmt])


#: Where the floor is set, as messages and documents name it.
FLOOR_KEY: Final = "[audit] http_purge_min_age_days"


class BelowPurgeFloor(FixedReasonError):
    """A purge by age over HTTP asked to remove events younger than the floor; the message
    is what the client is told."""

    REASON = "purge-floor"


def days_text(days: float) -> str:
    """`1 day`, `2 days`, `0.5 days`."""
    return f"{days:g} day" + ("" if days == 1 else "s")


def floor_refusal(floor_days: float, older_than_days: float) -> str:
    """What a purge by age below the floor is told (the API's problem and the console's
    page say the same)."""
    return (f"Over HTTP a purge keeps the events of the last {days_text(floor_days)}: "
            f"`older_than_days` must be at least {floor_days:g}, not {older_than_days:g}. "
            f"The floor is `{FLOOR_KEY}` in the server's config file; `dihya audit purge` "
            f"run on the server is not limited by it.")


def check_floor(st: DihyaState, token: TokenInfo, request_id: str | None,
                older_than_days: float | None) -> None:
    """Refuse a purge by age below the floor: audited (`audit.purged`, outcome `denied`,
    `reason: purge-floor`, the days asked), then `BelowPurgeFloor`."""
    floor_days = st.config.http_purge_min_age_days
    if older_than_days is None or older_than_days >= floor_days:
        return
    st.auditor.record("audit.purged", "denied", subject=token.name, role=token.role,
                      request_id=request_id, days=older_than_days,
                      reason=BelowPurgeFloor.REASON)
    raise BelowPurgeFloor(floor_refusal(floor_days, older_than_days))


def floor_before(st: DihyaState) -> float | None:
    """The floor as a time (seconds since the epoch): what is younger stays; None: none."""
    floor_days = st.config.http_purge_min_age_days
    return time.time() - floor_days * DAY_S if floor_days > 0 else None


def _kept_reason(counts: dict[str, Any], floor_days: float, subject: str | None) -> str | None:
    if not (counts["kept_events"] or counts["kept_logs"]):
        return None
    young = f"younger than {days_text(floor_days)} (`{FLOOR_KEY}`)"
    if subject is not None:
        reason = (f"Over HTTP the subject's events {young} keep their notes, and their "
                  f"pseudonym mapping stays until none of their events is that young "
                  f"(then purge again)")
    else:
        reason = f"Over HTTP the plugin's log records and the notes of its events {young} stay"
    return reason + ". `dihya audit purge` run on the server is not limited."


@audit_api.post("/purge")
@require("admin")
def purge_audit() -> Response:
    body = json_body()
    validate_body(PURGE_BODY, body)
    try:
        counts = purge_events(state(), current_token(), g.request_id,
                              subject=body.get("subject"),
                              older_than_days=body.get("older_than_days"),
                              plugin=body.get("plugin"))
    except BelowPurgeFloor as exc:
        raise ApiProblem(403, ProblemType.FORBIDDEN, "Below the purge floor",
                         exc.message) from None
    return jsonify(counts)


def purge_events(st: DihyaState, token: TokenInfo, request_id: str | None, *,
                 subject: str | None = None, older_than_days: float | None = None,
                 plugin: str | None = None) -> dict[str, Any]:
    """Erase `subject`, remove events older than `older_than_days`, or erase `plugin`'s
    log records and notes, then apply the retention period; audited with `token` as
    actor (the console's purge calls this too). Over HTTP, so within the floor: raises
    `BelowPurgeFloor` (audited) for a purge by age below it; a purge by subject or
    plugin leaves what is younger and says so (`kept_events`, `kept_logs`,
    `kept_reason`, `floor_days`)."""
    check_floor(st, token, request_id, older_than_days)
    floor_days, before = st.config.http_purge_min_age_days, floor_before(st)
    fields: dict[str, Any] = {"role": token.role, "request_id": request_id}
    if subject is not None:
        counts = {**purge_subject(st.auditor, subject, actor=token.name, before=before,
                                  **fields), "logs": 0}
    elif plugin is not None:
        counts = purge_plugin(st.auditor, plugin, actor=token.name, before=before, **fields)
    else:
        assert older_than_days is not None
        removed = purge_older_than(st.auditor, older_than_days, actor=token.name, **fields)
        counts = {"events": removed, "notes": 0, "tokens": 0, "switches": 0, "logs": 0}
    answer: dict[str, Any] = {"kept_events": 0, "kept_logs": 0, **counts,
                              "floor_days": floor_days}
    answer["kept_reason"] = _kept_reason(answer, floor_days, subject)
    answer["retention"] = apply_retention(
        st.auditor, st.config.audit_retention_days, 0,
        plugin_log_days=st.config.plugin_log_retention_days) or 0
    return answer
