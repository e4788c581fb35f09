"""Application logs as JSON lines, through the audit event's allowlist.

`JsonFormatter` writes `at`, `level`, `logger` and `message` — the call's format string,
never its interpolated arguments — plus the `extra=` fields whose names are `AuditEvent`
fields (`dihya.audit.FIELDS`); anything else a caller passes is dropped, and an exception
is reduced to its type's name. So a log line can carry a plugin name, a duration or a
hash, but not needs, code, tokens, addresses or names, whatever the call site does.

Every line is one line whatever a client sent: `escape_text` writes control characters
(C0 with CR and LF, DEL, C1), the Unicode line and paragraph separators and the
bidirectional overrides as `\\xHH`/`\\uHHHH`, so a `%0a` in a URL cannot start a forged
log line. JSON lines get the same characters as JSON `\\u` escapes (`json.dumps` already
escapes C0 but not DEL, C1 or U+2028).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Final

from dihya.audit import FIELDS

ALLOWED: Final = frozenset(FIELDS) - {"at", "type", "outcome"}

# What a terminal or a log viewer may take for a line break or use to disguise a line:
# C0 (CR, LF, ESC...), DEL, C1 (NEL...), U+2028/2029, bidirectional overrides and isolates.
_UNSAFE: Final = r"\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_UNSAFE_IN_TEXT: Final = re.compile(rf"[{_UNSAFE}\udc80-\udcff\\]")
_UNSAFE_CONTROLS: Final = re.compile(rf"[{_UNSAFE}\udc80-\udcff]")
_UNSAFE_IN_JSON: Final = re.compile(r"[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def escape_text(value: str, *, backslash: bool = True) -> str:
    """`value` on one line: unsafe characters as `\\xHH` or `\\uHHHH`, and (with
    `backslash`) `\\` as `\\\\`, so an escape in the output cannot be told apart
    from one a client typed. Lone surrogates (bytes that were not UTF-8, decoded with
    `surrogateescape`) come out as the `\\xHH` of the byte."""
    pattern = _UNSAFE_IN_TEXT if backslash else _UNSAFE_CONTROLS
    return pattern.sub(_escape_char, value)


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if char == "\\":
        return "\\\\"
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_json_line(line: str) -> str:
    """A JSON text with the characters `json.dumps` leaves raw (DEL, C1, U+2028...) as
    `\\u` escapes: the same JSON value, always on one line."""
    return _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", line)


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
