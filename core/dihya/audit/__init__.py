"""Audit events: one door (`Auditor.record`) for every critical action, no personal data.

An event is a typed record: only the fields below exist, so needs, code, tokens, IP
addresses and names cannot be written by mistake. The actor is a pseudonym of the subject
id (the token's name, or the CLI's user): with a store, a random token from the store's
mapping table (`dihya.audit.chain`), which erasure deletes; without one, an HMAC-SHA256
under `[audit] key` / `DIHYA_AUDIT_KEY`. Each event is appended to the store's hash-chained
log, if there is a store, and written as one JSON line to the `dihya.audit` logger once it
is committed: `record` returns only then, and raises `StoreUnavailable` (the caller answers
503, or exits 1) when it cannot be. Every event gets a random `event_id`, the key that
keeps a retried write from storing it twice. Free text that may be personal (a disable
reason) is the `note`: stored apart, erasable, never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import operator
import os
import secrets
import time
from typing import TYPE_CHECKING, Any, Final

import attrs

from dihya.canonical import sorted_json

if TYPE_CHECKING:
    from dihya.audit.chain import AuditLog
    from dihya.pipeline import HookResult
    from dihya.store import Store
    from dihya.store.marker import StoreMarker

log = logging.getLogger("dihya.audit")

ENV_KEY: Final = "DIHYA_AUDIT_KEY"
EVENT_TYPES: Final = frozenset({
    # plugin lifecycle
    "plugin.discovered", "plugin.refused", "plugin.approved", "plugin.revoked",
    "plugin.enabled", "plugin.disabled", "plugin.quarantined", "plugin.failed",
    "plugin.installed", "plugin.uninstalled", "plugin.rolled-back",
    # hook calls
    "hook.failed", "hook.timeout", "hook.sandbox-violation",
    # requests
    "generation", "plugin.action", "auth.failed", "acl.denied",
    # administration
    "token.created", "token.revoked", "token.rotated", "registry.reloaded",
    "pth.acknowledged",
    # the operator console: a session started with a token, or ended by its owner
    "session.started", "session.ended",
    # the audit log itself
    "audit.exported", "audit.purged", "audit.retention",
})
OUTCOMES: Final = frozenset({"ok", "denied", "failed", "invalid", "refused"})
FORMATS: Final = ("json", "jsonl", "csv")


def _optional_in(values: frozenset[str] | tuple[str, ...]) -> Any:
    return attrs.validators.optional(attrs.validators.in_(values))


@attrs.frozen(kw_only=True)
class AuditEvent:
    """Every field an audit event may carry; nothing else can be recorded."""

    type: str = attrs.field(validator=attrs.validators.in_(EVENT_TYPES))
    outcome: str = attrs.field(validator=attrs.validators.in_(OUTCOMES))
    at: float
    actor: str | None = None  # pseudonym of who acted
    target: str | None = None  # pseudonym of the subject an admin acted on (export)
    role: str | None = None
    request_id: str | None = None
    plugin: str | None = None
    plugin_version: str | None = None
    plugin_fingerprint: str | None = None
    action: str | None = None  # a plugin action's or a hook's name
    reason: str | None = None  # a reason code such as `acl`, never free text
    needs_sha256: str | None = None
    needs_bytes: int | None = None
    code_sha256: str | None = None
    code_bytes: int | None = None
    files: int | None = None
    plugins_ok: int | None = None
    plugins_failed: int | None = None
    duration_ms: float | None = None
    count: int | None = None  # events exported or removed; failures an auth.failed stands for
    days: float | None = None  # retention period, or purge --older-than
    format: str | None = attrs.field(default=None, validator=_optional_in(FORMATS))
    pth_file: str | None = None  # a .pth file's name (never its directory)
    pth_sha256: str | None = None  # the SHA-256 of its content
    event_id: str | None = None  # random, unique in the store: a retried write finds it

    def to_json(self) -> dict[str, Any]:
        """The fields that are set, in declaration order (every field is a plain value:
        what `attrs.asdict` gave, without its walk)."""
        return {k: v for k, v in zip(FIELDS, _values(self), strict=True) if v is not None}


FIELDS: Final = tuple(f.name for f in attrs.fields(AuditEvent))
_values: Final = operator.attrgetter(*FIELDS)  # every field's value, in one call
_SCALARS: Final = frozenset({str, int, float, bool})


class AuditLine:
    """The message of an audit event's log record: the event's JSON (sorted keys, ASCII)
    as its `str`, made on first use, carrying the event's fields (`fields`, None unless
    they are what parsing that text gives) so that the server's formatter
    (`dihya.audit.logs`) need not make the text nor parse it back. Any other handler
    (`record.getMessage()`) sees the text."""

    __slots__ = ("_data", "_text", "fields")

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data
        self._text: str | None = None
        self.fields: dict[str, Any] | None = \
            data if _SCALARS.issuperset(map(type, data.values())) else None

    def __str__(self) -> str:
        if self._text is None:
            self._text = sorted_json(self._data)
        return self._text

    def __repr__(self) -> str:
        return repr(str(self))


class Auditor:
    """Pseudonymises actors and records events; one per app or CLI invocation."""

    def __init__(self, key: str | bytes | None = None, store: Store | None = None,
                 marker: StoreMarker | None = None) -> None:
        """`marker`: the config's store marker, told once that events were written."""
        key = key or os.environ.get(ENV_KEY)
        self._key = key.encode("utf-8") if isinstance(key, str) else key
        self.log: AuditLog | None = None
        if store is not None:
            from dihya.audit.chain import AuditLog

            self.log = AuditLog(store, self._key, marker)
        elif self._key is None:
            self._key = secrets.token_bytes(32)

    def pseudonym(self, subject: str) -> str:
        """The subject's stand-in: its random pseudonym in the store (created on first
        use), or without a store an HMAC under this auditor's key."""
        if self.log is not None:
            found = self.log.pseudonym(subject)
            assert found is not None
            return found
        assert self._key is not None
        digest = hmac.new(self._key, subject.encode("utf-8"), hashlib.sha256).hexdigest()
        return f"p-{digest[:20]}"

    def record(self, type: str, outcome: str, *, subject: str | None = None,
               target: str | None = None, note: str | None = None,
               **fields: Any) -> AuditEvent:
        """Record one event and return it as stored, once committed (`StoreUnavailable`
        if it cannot be). `subject` (who acted) and `target` (whom it is about) are
        pseudonymised and never stored in clear; `note` is personal free text, kept only
        in the erasable payload table."""
        event = AuditEvent(type=type, outcome=outcome, at=round(time.time(), 6),
                           event_id=secrets.token_hex(16), **fields)
        if self.log is not None:
            _seq, event = self.log.append(event, subject=subject, target=target, note=note)
        elif subject or target:
            event = attrs.evolve(event, actor=self.pseudonym(subject) if subject else None,
                                 target=self.pseudonym(target) if target else None)
        _log_line(event)
        return event

    def flush(self) -> None:
        """Nothing to wait for: `record` returns once the event is committed."""

    def close(self) -> None:
        """Nothing to stop (kept for callers written when a writer thread deferred events)."""


def _log_line(event: AuditEvent) -> None:
    """The event's JSON line on the `dihya.audit` logger, at INFO."""
    if not log.isEnabledFor(logging.INFO):
        return
    line = AuditLine(event.to_json())  # its text made only if a handler asks for it
    # `log.info` without its look-up of the caller's frame (this function, always)
    log.handle(log.makeRecord(log.name, logging.INFO, __file__, _LOG_LINE_NO, line, (),
                              None, "_log_line"))


_LOG_LINE_NO: Final = _log_line.__code__.co_firstlineno


def hook_event_type(result: HookResult) -> str:
    """`hook.timeout`, `hook.sandbox-violation` (the worker died or broke the protocol) or
    `hook.failed`, for a hook result whose status is not ok."""
    if result.status == "timeout":
        return "hook.timeout"
    if result.violation:
        return "hook.sandbox-violation"
    return "hook.failed"


def iso_time(ts: float) -> str:
    """`ts` (seconds since the epoch) as ISO 8601 in UTC, to the millisecond:
    `2026-12-02T09:01:19.123Z`.

    Exactly `datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")` with
    `Z` for `+00:00` (`tests/unit/test_audit_time.py` compares them): the microseconds
    rounded half to even as `fromtimestamp` rounds them, then truncated to milliseconds;
    the date and time of the second from a small cache (every log line asks, and the
    datetime round trip was most of a line's time)."""
    if type(ts) is not float or not _TS_MIN <= ts < _TS_MAX:
        return _iso_time_datetime(ts)
    frac, whole = math.modf(ts)
    micro = round(frac * 1e6)
    if micro >= 1_000_000:
        whole, micro = whole + 1, micro - 1_000_000
    elif micro < 0:
        whole, micro = whole - 1, micro + 1_000_000
    second = int(whole)
    prefix = _SECONDS.get(second)
    if prefix is None:
        if len(_SECONDS) >= 64:
            _SECONDS.clear()
        prefix = _SECONDS[second] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{prefix}.{micro // 1000:03d}Z"


def _iso_time_datetime(ts: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


_SECONDS: dict[int, str] = {}  # a second since the epoch -> its date and time, UTC
_TS_MIN: Final = 0.0  # from the epoch to the year 9999: four-digit years, as isoformat
_TS_MAX: Final = 253402300799.0


def sha256_of(text: str | bytes) -> str:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()
