"""`/api/v1/audit`: export and purge the audit log over HTTP (admin only).

The same operations as `dihya audit export|purge` (`dihya.gdpr`), each itself audited
with the admin as actor and the subject only as a pseudonym (export) or not at all (purge).
"""

from __future__ import annotations

from typing import Any, Final

from flask import Blueprint, Response, g, jsonify, request

from dihya.audit import FORMATS
from dihya.gdpr import apply_retention, export, purge_older_than, purge_subject
from dihya.web.api import json_body, validate_body
from dihya.web.auth import current_token, require, state

#: What a subject id looks like: a token's name or a CLI user's login (short, ASCII).
SUBJECT_PATTERN: Final = r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,127}$"

EXPORT_QUERY: Final[dict[str, Any]] = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "subject": {"type": "string", "pattern": SUBJECT_PATTERN, "maxLength": 128,
                    "description": "Only events about this subject (a token's name or a CLI "
                                   "user); left out: every event."},
        "format": {"type": "string", "enum": list(FORMATS), "default": "json"},
    },
}
PURGE_BODY: Final[dict[str, Any]] = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "subject": {"type": "string", "pattern": SUBJECT_PATTERN, "maxLength": 128,
                    "description": "Erase this subject: pseudonym, notes, tokens."},
        "older_than_days": {"type": "number", "minimum": 0, "maximum": 36500,
                            "description": "Remove events older than this many days."},
    },
    "oneOf": [{"required": ["subject"]}, {"required": ["older_than_days"]}],
}

audit_api = Blueprint("audit", __name__, url_prefix="/api/v1/audit")


@audit_api.get("/export")
@require("admin")
def export_events() -> Response:
    query = request.args.to_dict()
    validate_body(EXPORT_QUERY, query)
    fmt = query.get("format", "json")
    token = current_token()
    text = export(state().auditor, query.get("subject"), fmt, actor=token.name,
                  role=token.role, request_id=g.request_id)
    mimetype = "text/csv" if fmt == "csv" else "application/json"
    return Response(text, status=200, mimetype=mimetype)


@audit_api.post("/purge")
@require("admin")
def purge() -> Response:
    body = json_body()
    validate_body(PURGE_BODY, body)
    st, token = state(), current_token()
    fields = {"actor": token.name, "role": token.role, "request_id": g.request_id}
    if "subject" in body:
        counts = purge_subject(st.auditor, body["subject"], **fields)
    else:
        removed = purge_older_than(st.auditor, body["older_than_days"], **fields)
        counts = {"events": removed, "notes": 0, "tokens": 0, "switches": 0}
    counts["retention"] = apply_retention(st.auditor, st.config.audit_retention_days, 0) or 0
    return jsonify(counts)
