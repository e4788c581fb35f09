"""Audit events: one door (`Auditor.record`) for every critical action, no personal data.

An event is a typed record: only the fields below exist, so needs, code, tokens, IP
addresses and names cannot be written by mistake. The actor is an HMAC-SHA256 pseudonym of
the subject id (the token's name, or the CLI's user), keyed by `[audit] key` or
`DIHYA_AUDIT_KEY`. Events are written as one JSON line each to the `dihya.audit` logger.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from typing import Any, Final

import attrs

log = logging.getLogger("dihya.audit")

ENV_KEY: Final = "DIHYA_AUDIT_KEY"
EVENT_TYPES: Final = frozenset({
    "plugin.approved", "plugin.revoked", "plugin.enabled", "plugin.disabled",
    "plugin.quarantined", "plugin.failed",
    "plugin.action", "generation", "auth.failed", "acl.denied", "token.created",
    "token.revoked", "registry.reloaded",
})
OUTCOMES: Final = frozenset({"ok", "denied", "failed", "invalid", "refused"})


@attrs.frozen(kw_only=True)
class AuditEvent:
    """Every field an audit event may carry; nothing else can be recorded."""

    type: str = attrs.field(validator=attrs.validators.in_(EVENT_TYPES))
    outcome: str = attrs.field(validator=attrs.validators.in_(OUTCOMES))
    at: float
    actor: str | None = None
    role: str | None = None
    request_id: str | None = None
    plugin: str | None = None
    plugin_version: str | None = None
    plugin_fingerprint: str | None = None
    action: str | None = None
    reason: str | None = None  # a reason code such as `acl`, never free text
    needs_sha256: str | None = None
    needs_bytes: int | None = None
    code_sha256: str | None = None
    code_bytes: int | None = None
    files: int | None = None
    plugins_ok: int | None = None
    plugins_failed: int | None = None
    duration_ms: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in attrs.asdict(self).items() if v is not None}


class Auditor:
    """Pseudonymises actors and writes events; one per app or CLI invocation."""

    def __init__(self, key: str | bytes | None = None) -> None:
        key = key or os.environ.get(ENV_KEY) or secrets.token_bytes(32)
        self._key = key.encode("utf-8") if isinstance(key, str) else key

    def pseudonym(self, subject: str) -> str:
        """A stable, non-reversible stand-in for `subject` under this key."""
        digest = hmac.new(self._key, subject.encode("utf-8"), hashlib.sha256).hexdigest()
        return f"p-{digest[:20]}"

    def record(self, type: str, outcome: str, *, subject: str | None = None,
               **fields: Any) -> AuditEvent:
        """Record one event; `subject` is pseudonymised and never stored in clear."""
        event = AuditEvent(type=type, outcome=outcome, at=round(time.time(), 3),
                           actor=self.pseudonym(subject) if subject else None, **fields)
        log.info(json.dumps(event.to_json(), sort_keys=True, separators=(",", ":")))
        return event


def sha256_of(text: str | bytes) -> str:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()
