"""`/api/v1/audit`: export and purge the audit log over HTTP (admin only).

The same operations as `dihya audit export|purge` (`dihya.audit.gdpr`), each itself audited
with the admin as actor and the subject only as a pseudonym (export) or not at all (purge).
"""

from __future__ import annotations

from typing import Any, Final

from flask import Blueprint, Response, g, jsonify, request

from dihya.audit import FORMATS
from dihya.audit.gdpr import apply_retention, export, purge_older_than, purge_subject
from dihya.store.tokens import TokenInfo
from dihya.web.api import json_body, validate_body
from dihya.web.auth import current_token, require, state
from dihya.web.state import DihyaState

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
                                older_than_days=body.get("older_than_days")))


def purge_events(st: DihyaState, token: TokenInfo, request_id: str | None, *,
                 subject: str | None = None,
                 older_than_days: float | None = None) -> dict[str, int]:
    """Erase `subject`, or remove events older than `older_than_days`, then apply the
    retention period; audited with `token` as actor (the console's purge calls this too)."""
    fields: dict[str, Any] = {"role": token.role, "request_id": request_id}
    if subject is not None:
        counts = purge_subject(st.auditor, subject, actor=token.name, **fields)
    else:
        assert older_than_days is not None
        removed = purge_older_than(st.auditor, older_than_days, actor=token.name, **fields)
        counts = {"events": removed, "notes": 0, "tokens": 0, "switches": 0}
    counts["retention"] = apply_retention(st.auditor, st.config.audit_retention_days, 0) or 0
    return counts
