"""`/api/v1/audit`: export and purge the audit log over HTTP (admin only), by subject, by
age or by plugin (its events and its own log records).

The same operations as `dihya audit export|purge` (`dihya.audit.gdpr`), each itself audited
with the admin as actor and the subject only as a pseudonym (export) or not at all (purge).
"""

from __future__ import annotations

from typing import Any, Final

from flask import Blueprint, Response, g, jsonify, request

from dihya.audit import FORMATS
from dihya.audit.gdpr import (
    PLUGIN_FORMATS,
    apply_retention,
    export,
    plugin_export,
    purge_older_than,
    purge_plugin,
    purge_subject,
)
from dihya.reasons import ProblemType
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


@audit_api.post("/purge")
@require("admin")
def purge_audit() -> Response:
    body = json_body()
    validate_body(PURGE_BODY, body)
    return jsonify(purge_events(state(), current_token(), g.request_id,
                                subject=body.get("subject"),
                                older_than_days=body.get("older_than_days"),
                                plugin=body.get("plugin")))


def purge_events(st: DihyaState, token: TokenInfo, request_id: str | None, *,
                 subject: str | None = None, older_than_days: float | None = None,
                 plugin: str | None = None) -> dict[str, int]:
    """Erase `subject`, remove events older than `older_than_days`, or erase `plugin`'s
    log records and notes, then apply the retention period; audited with `token` as
    actor (the console's purge calls this too)."""
    fields: dict[str, Any] = {"role": token.role, "request_id": request_id}
    if subject is not None:
        counts = {**purge_subject(st.auditor, subject, actor=token.name, **fields), "logs": 0}
    elif plugin is not None:
        counts = purge_plugin(st.auditor, plugin, actor=token.name, **fields)
    else:
        assert older_than_days is not None
        removed = purge_older_than(st.auditor, older_than_days, actor=token.name, **fields)
        counts = {"events": removed, "notes": 0, "tokens": 0, "switches": 0, "logs": 0}
    counts["retention"] = apply_retention(
        st.auditor, st.config.audit_retention_days, 0,
        plugin_log_days=st.config.plugin_log_retention_days) or 0
    return counts
