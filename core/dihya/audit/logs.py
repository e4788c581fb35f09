"""Application logs as JSON lines, through the audit event's allowlist.

`JsonFormatter` writes `at`, `level`, `logger` and `message` — the call's format string,
never its interpolated arguments — plus the `extra=` fields whose names are `AuditEvent`
fields (`dihya.audit.FIELDS`); anything else a caller passes is dropped, and an exception
is reduced to its type's name. So a log line can carry a plugin name, a duration or a
hash, but not needs, code, tokens, addresses or names, whatever the call site does.

Every line is one line whatever a client sent (`dihya.escaping`).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Final

from dihya.audit import FIELDS
from dihya.escaping import escape_json_line

ALLOWED: Final = frozenset(FIELDS) - {"at", "type", "outcome"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, allowlisted fields only."""

    def format(self, record: logging.LogRecord) -> str:
        if record.name == "dihya.audit":  # already an allowlisted event's JSON
            return escape_json_line(str(record.msg))
        out: dict[str, Any] = {"at": round(record.created, 3), "level": record.levelname,
                               "logger": record.name, "message": str(record.msg)}
        for key in ALLOWED:
            value = record.__dict__.get(key)
            if isinstance(value, str | int | float | bool):
                out[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            out["error"] = record.exc_info[0].__name__
        return escape_json_line(json.dumps(out, sort_keys=True, separators=(",", ":"),
                                           ensure_ascii=False))


def json_handler(stream: Any) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    return handler


def configure(stream: Any, level: int = logging.INFO) -> None:
    """Send the `dihya` loggers' records (audit events included) at `level` and above to
    `stream` as JSON lines (the handler is added once; a later call sets the level, as
    `dihya serve` does after the CLI's own setup); they do not propagate to the root
    logger."""
    core = logging.getLogger("dihya")
    if not core.handlers:
        core.addHandler(json_handler(stream))
        core.propagate = False
    core.setLevel(level)
