"""Catch the records of the `dihya.plugin` loggers, per call, as plain JSON data ("wire"
records), in the backend's process and in a sandbox worker alike.

A record is kept as its format string and its arguments apart (never the interpolated
message), so redaction can look at each argument and the message stays useful. Numbers,
booleans and None stay as they are; any other argument becomes its `str()`. An exception
is kept as its type's name only. A record larger than `MAX_WIRE_BYTES` is dropped (and
counted), never cut: a cut could split a personal value so that redaction misses it.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from collections.abc import Iterator
from typing import Any, Final

LOGGER_ROOT: Final = "dihya.plugin"
#: What one call (one answer frame of a worker) carries at most; the rest is counted.
MAX_CALL_RECORDS: Final = 1000
#: A record whose format string and arguments exceed this (UTF-8) is dropped, counted.
MAX_WIRE_BYTES: Final = 16384
MAX_ARGS: Final = 32
#: Logger names whose records made outside a call are kept for a later call, at most.
MAX_PENDING_PLUGINS: Final = 256
#: What the `dihya.plugin` loggers pass on unless a plugin lowers its own logger's level.
DEFAULT_LEVEL: Final = logging.INFO

_ATOMS: Final = (int, float, bool, type(None))


def logger_for(name: str) -> logging.Logger:
    """The logger of the plugin whose entry-point name is `name`."""
    return logging.getLogger(f"{LOGGER_ROOT}.{name}")


class CallBuffer:
    """The wire records of one call (or, in a worker, since the last answer)."""

    __slots__ = ("dropped", "records")

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.dropped = 0

    def add(self, wire: dict[str, Any] | None) -> None:
        if wire is None or len(self.records) >= MAX_CALL_RECORDS:
            self.dropped += 1
        else:
            self.records.append(wire)

    def extend(self, other: CallBuffer) -> None:
        for wire in other.records:
            self.add(wire)
        self.dropped += other.dropped

    def take(self) -> dict[str, Any] | None:
        """What was caught, as the `"logs"` of an answer, and empty the buffer; None when
        nothing was."""
        if not self.records and not self.dropped:
            return None
        out = {"records": self.records, "dropped": self.dropped}
        self.records, self.dropped = [], 0
        return out


def _arg(value: Any) -> Any:
    if isinstance(value, _ATOMS):
        return value
    try:
        return str(value)
    except Exception as exc:  # a plugin's __str__: its failure is not the logger's
        return f"<unprintable {type(value).__name__}: {type(exc).__name__}>"


def wire(record: logging.LogRecord) -> dict[str, Any] | None:
    """`record` as JSON data; None when it is larger than `MAX_WIRE_BYTES`."""
    args: Any
    raw: Any = record.args
    if isinstance(raw, dict):
        args = {str(k): _arg(v) for k, v in list(raw.items())[:MAX_ARGS]}
    else:
        args = [_arg(a) for a in (raw or ())[:MAX_ARGS]]
    out: dict[str, Any] = {"at": record.created, "level": record.levelname,
                           "msg": _arg(record.msg), "args": args}
    if record.exc_info and record.exc_info[0] is not None:
        out["error"] = record.exc_info[0].__name__
    values = args.values() if isinstance(args, dict) else args
    size = len(str(out["msg"]).encode("utf-8", "replace")) + sum(
        len(v.encode("utf-8", "replace")) for v in values if isinstance(v, str))
    return None if size > MAX_WIRE_BYTES else out


# The buffer of the call under way in this context; a worker sets one for its lifetime.
_CURRENT: contextvars.ContextVar[CallBuffer | None] = contextvars.ContextVar(
    "dihya_plugin_log_call", default=None)
# The entry-point name of the plugin being imported and instantiated in this context.
_LOADING: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "dihya_plugin_log_loading", default=None)
_PENDING: dict[str, CallBuffer] = {}  # records caught outside a call, by plugin
_PENDING_LOCK = threading.Lock()
_PROCESS: list[CallBuffer] = []  # a sandbox worker's one buffer (`install(process=True)`)


class _Capture(logging.Handler):
    """Puts every `dihya.plugin.*` record in the buffer of the call under way; a record
    made outside a call (at import, in `__init__`, in a thread of its own) waits for that
    plugin's next call."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = wire(record)
        except Exception:  # a record that cannot even be read: counted, never raised
            data = None
        buffer = _CURRENT.get() or (_PROCESS[0] if _PROCESS else None)
        if buffer is not None:
            buffer.add(data)
            return
        name = _LOADING.get() or record.name.removeprefix(LOGGER_ROOT + ".")
        with _PENDING_LOCK:
            if name in _PENDING or len(_PENDING) < MAX_PENDING_PLUGINS:
                _PENDING.setdefault(name, CallBuffer()).add(data)


_HANDLER: Final = _Capture()
# `logging.getLogger` takes the logging module's lock: looked up once, not per call
_ROOT: Final = logging.getLogger(LOGGER_ROOT)


def install(process: bool = False) -> None:
    """Catch the `dihya.plugin` loggers' records (idempotent). They do not propagate: a
    plugin's record reaches the operator only redacted, through the store. `process`: one
    buffer for the whole process (a sandbox worker, which hosts one plugin)."""
    root = _ROOT
    if _HANDLER not in root.handlers:
        root.addHandler(_HANDLER)
        root.propagate = False
        if root.level == logging.NOTSET:
            root.setLevel(DEFAULT_LEVEL)
    if process and not _PROCESS:
        _PROCESS.append(CallBuffer())


def process_buffer() -> CallBuffer:
    """A sandbox worker's buffer (see `install`)."""
    install(process=True)
    return _PROCESS[0]


@contextlib.contextmanager
def loading(name: str) -> Iterator[None]:
    """Records made while plugin `name` is imported and instantiated are its own (whatever
    logger they use); they wait for its first call."""
    install()
    token = _LOADING.set(name)
    try:
        yield
    finally:
        _LOADING.reset(token)


CallToken = contextvars.Token[CallBuffer | None]


def begin_call(name: str) -> tuple[CallBuffer, CallToken]:
    """Start catching the records of one call of plugin `name`, after those it made outside
    a call: its buffer, and the token `end_call` takes (in a `finally`). `capture_call`
    without a generator-based context manager, for the in-process executor's hot path."""
    if _HANDLER not in _ROOT.handlers:
        install()
    buffer = CallBuffer()
    if name in _PENDING:  # a peek (atomic); the pop holds the lock
        with _PENDING_LOCK:
            earlier = _PENDING.pop(name, None)
        if earlier is not None:
            buffer.extend(earlier)
    return buffer, _CURRENT.set(buffer)


def end_call(token: CallToken) -> None:
    """Stop catching the records of the call `begin_call` started."""
    _CURRENT.reset(token)


@contextlib.contextmanager
def capture_call(name: str) -> Iterator[CallBuffer]:
    """Catch the records of one call of plugin `name`, after those it made outside a call."""
    buffer, token = begin_call(name)
    try:
        yield buffer
    finally:
        end_call(token)
