"""Log lines, one format for every record: JSON (or text for people), allowlisted fields only.

Every line carries `time` (ISO 8601, UTC, ms), `level`, `event`, `request_id` (null outside
a request) and `message`, then the `extra=` fields whose names are `AuditEvent` fields
(`dihya.audit.FIELDS`) or HTTP access fields (`ACCESS_FIELDS`); anything else a caller
passes is dropped, and an exception is reduced to its type's name. So a line can carry a
plugin name, a duration or a hash, but not needs, code, tokens, addresses or names,
whatever the call site does.

`message` is rendered (`%s` filled in) for the core's own records with each argument
checked: a number, or a word-like string (an exception type, a hook, a plugin name, a hash
prefix), else `<redacted>`; the server's own records (gunicorn) are rendered as they are,
but for a URI's query string (`?…`).
An audit event (`dihya.audit`) is its allowlisted JSON with `event` = its type.

Every line is one line whatever a client sent (`dihya.escaping`).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Final

from dihya.audit import FIELDS, AuditLine, iso_time
from dihya.canonical import sorted_json
from dihya.escaping import escape_json_line, escape_text

#: HTTP access-log fields (gunicorn's access records, written by `dihya.web.serve`).
ACCESS_FIELDS: Final = frozenset({"method", "path", "status", "bytes", "pid"})
ALLOWED: Final = (frozenset(FIELDS) - {"at", "type", "outcome"}) | ACCESS_FIELDS
#: Log formats `dihya serve --log-format` accepts.
LOG_FORMATS: Final = ("json", "text")
#: An argument of a core message shown as it is: a number or a word-like string.
_WORD: Final = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:+-]{0,79}$")
REDACTED: Final = "<redacted>"
_TRUSTED_LOGGERS: Final = ("gunicorn.",)
_ALLOWED_EXTRA: Final = ALLOWED - {"request_id"}  # request_id: a line's own field
_PLAIN: Final = (str, int, float, bool)  # a tuple: `isinstance` with a union is slower


def _safe_arg(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float)):  # a tuple: faster
        return value
    if isinstance(value, str) and _WORD.match(value):
        return value
    return REDACTED


def _server_arg(value: Any) -> Any:
    """A gunicorn argument as it is, except a URI's query string (tokens, personal data)."""
    if isinstance(value, str) and "?" in value:
        return value.partition("?")[0] + "?…"
    return value


def render_message(record: logging.LogRecord) -> str:
    """The record's message with its arguments filled in: every argument of a core record
    checked by `_safe_arg`; a server (gunicorn) record as it is, but for query strings."""
    text = str(record.msg)
    args = record.args
    if not args:
        return text
    check = _server_arg if record.name.startswith(_TRUSTED_LOGGERS) else _safe_arg
    if isinstance(args, dict):
        args = {k: check(v) for k, v in args.items()}
    else:
        args = tuple(check(a) for a in args)
    try:
        return text % args
    except (TypeError, ValueError, KeyError):
        return text


def event_name(record: logging.LogRecord) -> str:
    """What happened, as a short dotted name: the audit type, `http.request`, `server`,
    or the `event` a call site gave, else the core logger's name (`pipeline`, `web`)."""
    given = record.__dict__.get("event")
    if isinstance(given, str) and _WORD.match(given):
        return given
    if record.name == "gunicorn.access":
        return "http.request"
    if record.name.startswith("gunicorn"):
        return "server"
    return record.name.removeprefix("dihya.") or "dihya"


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The line's fields: time, level, event, request_id, message, then allowlisted ones."""
    if record.name == "dihya.audit":  # already an allowlisted event's JSON
        event: dict[str, Any] | None = getattr(record.msg, "fields", None)
        if type(record.msg) is not AuditLine or event is None:  # the text, parsed
            try:
                event = json.loads(str(record.msg))
            except ValueError:
                event = {}
        if isinstance(event, dict) and "type" in event:
            at = event.get("at")
            what = " ".join(str(event[k]) for k in ("type", "outcome", "plugin") if k in event)
            request_id = event.get("request_id") or record.__dict__.get("request_id")
            return {"time": iso_time(at if isinstance(at, int | float) else record.created),
                    "level": record.levelname, "event": event["type"],
                    "request_id": request_id if isinstance(request_id, str) else None,
                    "message": f"audit {what}",
                    **{k: v for k, v in event.items() if k not in ("request_id",)}}
    out: dict[str, Any] = {"time": iso_time(record.created), "level": record.levelname,
                           "event": event_name(record),
                           "request_id": record.__dict__.get("request_id"),
                           "message": render_message(record), "logger": record.name}
    given = record.__dict__
    for key in _ALLOWED_EXTRA.intersection(given):  # the few a record has, not all
        value = given[key]
        if isinstance(value, _PLAIN):
            out[key] = value
    if not isinstance(out["request_id"], str):
        out["request_id"] = None
    if record.exc_info and record.exc_info[0] is not None:
        out["error"] = record.exc_info[0].__name__
    return out


class JsonFormatter(logging.Formatter):
    """One JSON object per record, allowlisted fields only."""

    def format(self, record: logging.LogRecord) -> str:
        return escape_json_line(sorted_json(fields_of(record), ensure_ascii=False))


class TextFormatter(logging.Formatter):
    """The same fields for people: `time level event message key=value ... [request id]`."""

    def format(self, record: logging.LogRecord) -> str:
        fields = fields_of(record)
        head = [fields.pop(k) for k in ("time", "level", "event", "message")]
        request_id = fields.pop("request_id")
        fields.pop("logger", None)
        fields.pop("at", None)
        rest = " ".join(f"{k}={v}" for k, v in sorted(fields.items())
                        if k not in ("type", "event_id"))
        line = f"{head[0]} {head[1]:<7} {head[2]:<16} {head[3]}"
        if rest:
            line += f"  {rest}"
        if request_id:
            line += f"  [{request_id}]"
        return escape_text(line, backslash=False)


def formatter(fmt: str = "json") -> logging.Formatter:
    """The formatter of `fmt` (`json` or `text`)."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {fmt!r}")
    return JsonFormatter() if fmt == "json" else TextFormatter()


def json_handler(stream: Any, fmt: str = "json") -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(fmt))
    return handler


def configure(stream: Any, level: int = logging.INFO, fmt: str | None = None) -> None:
    """Send the `dihya` loggers' records (audit events included) at `level` and above to
    `stream` as JSON lines (the handler is added once; a later call sets the level, and
    the format if given, as `dihya serve` does after the CLI's own setup); they do not
    propagate to the root logger."""
    core = logging.getLogger("dihya")
    if not core.handlers:
        core.addHandler(json_handler(stream, fmt or "json"))
        core.propagate = False
    elif fmt is not None:
        for handler in core.handlers:
            handler.setFormatter(formatter(fmt))
    core.setLevel(level)
