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
from collections.abc import Iterator, Mapping
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


# The entry-point name of the plugin being imported and instantiated in this context.
_LOADING: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "dihya_plugin_log_loading", default=None)
_PENDING: dict[str, CallBuffer] = {}  # records caught outside a call, by plugin
_PENDING_LOCK = threading.Lock()
_PROCESS: list[CallBuffer] = []  # a sandbox worker's one buffer (`install(process=True)`)


class _Calls(threading.local):
    """This thread's calls under way, innermost last (`call_stack`)."""

    def __init__(self) -> None:
        self.stack: list[str | CallBuffer] = []


_CALLS: Final = _Calls()
#: `call_stack()`'s owner, for a hot path that reads `CALLS.stack` itself.
CALLS: Final = _CALLS
#: The plugins with records made outside a call (read-only outside this module: a hot
#: path calls `call_entry` only when its plugin is in it).
WAITING: Final[Mapping[str, CallBuffer]] = _PENDING


def call_stack() -> list[str | CallBuffer]:
    """This thread's calls under way, innermost last: an entry is the plugin's name until
    the call logs something, then the `CallBuffer` that holds what it logged.

    The in-process executor's hot path (issue #16): a call pushes its plugin's name
    (`call_entry`) and pops its entry when the hook returns; only a call that logs
    allocates a buffer (the handler replaces the name with one). A hook runs on the
    caller's thread, so the records made on this thread during the call are the call's;
    a record made on another thread (one the plugin started) waits for the plugin's next
    call, as one made at import does.
    """
    return _CALLS.stack


def call_entry(name: str) -> str | CallBuffer:
    """What a call of plugin `name` pushes on `call_stack()`: its name, or a buffer with
    the records it made outside a call, when there are some (they come first)."""
    if name in _PENDING:  # a peek (atomic); the pop holds the lock
        with _PENDING_LOCK:
            earlier = _PENDING.pop(name, None)
        if earlier is not None:
            buffer = CallBuffer()
            buffer.extend(earlier)
            return buffer
    return name


class _Capture(logging.Handler):
    """Puts every `dihya.plugin.*` record in the buffer of the call under way; a record
    made outside a call (at import, in `__init__`, in a thread of its own) waits for that
    plugin's next call."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = wire(record)
        except Exception:  # a record that cannot even be read: counted, never raised
            data = None
        stack = _CALLS.stack
        if stack:  # a call under way on this thread: the innermost one's
            top = stack[-1]
            if isinstance(top, str):  # its first record: now it needs a buffer
                top = stack[-1] = CallBuffer()
            top.add(data)
            return
        if _PROCESS:
            _PROCESS[0].add(data)
            return
        name = _LOADING.get() or record.name.removeprefix(LOGGER_ROOT + ".")
        with _PENDING_LOCK:
            if name in _PENDING or len(_PENDING) < MAX_PENDING_PLUGINS:
                _PENDING.setdefault(name, CallBuffer()).add(data)


_HANDLER: Final = _Capture()
# `logging.getLogger` takes the logging module's lock: looked up once, not per call
_ROOT: Final = logging.getLogger(LOGGER_ROOT)
#: The handler `install` puts on `PLUGIN_LOGGER` (a hot path checks it is still there: a
#: logging configuration that removed it would let plugin records through unredacted).
CAPTURE_HANDLER: Final = _HANDLER
#: The `dihya.plugin` logger.
PLUGIN_LOGGER: Final = _ROOT


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


class loading:  # named as the function it replaces: `with loading(name):`
    """Records made while plugin `name` is imported and instantiated are its own (whatever
    logger they use); they wait for its first call.

    A class rather than a generator-based context manager: every registry build enters it
    twice per in-process plugin."""

    __slots__ = ("_name", "_token")

    def __init__(self, name: str) -> None:
        self._name = name
        self._token: contextvars.Token[str | None] | None = None

    def __enter__(self) -> None:
        install()
        self._token = _LOADING.set(self._name)

    def __exit__(self, *_exc: object) -> None:
        if self._token is not None:
            _LOADING.reset(self._token)
            self._token = None


def begin_call(name: str) -> CallBuffer:
    """Start catching the records of one call of plugin `name` on this thread, after those
    it made outside a call: the call's buffer. `end_call` (in a `finally`) ends it."""
    if _HANDLER not in _ROOT.handlers:
        install()
    entry = call_entry(name)
    buffer = entry if isinstance(entry, CallBuffer) else CallBuffer()
    _CALLS.stack.append(buffer)
    return buffer


def end_call(buffer: CallBuffer) -> None:
    """Stop catching the records of the call `begin_call` started (its buffer), and of any
    call begun inside it and left open."""
    stack = _CALLS.stack
    for depth in range(len(stack) - 1, -1, -1):
        if stack[depth] is buffer:
            del stack[depth:]
            return


@contextlib.contextmanager
def capture_call(name: str) -> Iterator[CallBuffer]:
    """Catch the records of one call of plugin `name`, after those it made outside a call."""
    buffer = begin_call(name)
    try:
        yield buffer
    finally:
        end_call(buffer)
