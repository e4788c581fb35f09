"""Statuses, reason codes, hook outcomes and problem types: the codes scripts read, once.

They are `StrEnum`s: each member is the string users see (`Reason.SHADOWED_MODULE ==
"shadowed-module"`), so JSON, logs and comparisons with plain strings keep working, while
the code refers to members that a typo cannot silently create. `DihyaError` is the base of
the core's errors that carry one of these codes.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Final


class Status(StrEnum):
    """What the core decided about a discovered plugin."""

    ACTIVE = "active"
    DISABLED = "disabled"
    REFUSED = "refused"
    FAILED = "failed"


class Reason(StrEnum):
    """Why a plugin is not active (DESIGN.md: statuses), and why a worker could not start."""

    # disabled
    DISABLED_BY_CONFIG = "disabled-by-config"
    DISABLED_BY_ENV = "disabled-by-env"
    DISABLED_BY_ADMIN = "disabled-by-admin"
    QUARANTINED = "quarantined"
    # refused
    NOT_ALLOWLISTED = "not-allowlisted"
    FINGERPRINT_MISMATCH = "fingerprint-mismatch"
    VERSION_MISMATCH = "version-mismatch"
    DISTRIBUTION_MISMATCH = "distribution-mismatch"
    UNLISTED_FILE = "unlisted-file"
    MISSING_FILE = "missing-file"
    DUPLICATE_NAME = "duplicate-name"
    OUTSIDE_DISTRIBUTION = "outside-distribution"
    SHADOWED_MODULE = "shadowed-module"
    UNSAFE_IN_PROCESS = "unsafe-in-process"
    # failed
    IMPORT_ERROR = "import-error"
    INVALID_PLUGIN = "invalid-plugin"
    MISSING_DEPENDENCY = "missing-dependency"
    SANDBOX_START_FAILED = "sandbox-start-failed"


#: The reasons each status may carry (an active plugin has none).
REASONS_BY_STATUS: Final[dict[Status, tuple[Reason, ...]]] = {
    Status.ACTIVE: (),
    Status.DISABLED: (Reason.DISABLED_BY_CONFIG, Reason.DISABLED_BY_ENV,
                      Reason.DISABLED_BY_ADMIN, Reason.QUARANTINED),
    Status.REFUSED: (Reason.NOT_ALLOWLISTED, Reason.FINGERPRINT_MISMATCH,
                     Reason.VERSION_MISMATCH, Reason.DISTRIBUTION_MISMATCH,
                     Reason.UNLISTED_FILE, Reason.MISSING_FILE, Reason.DUPLICATE_NAME,
                     Reason.OUTSIDE_DISTRIBUTION, Reason.SHADOWED_MODULE,
                     Reason.UNSAFE_IN_PROCESS),
    Status.FAILED: (Reason.IMPORT_ERROR, Reason.INVALID_PLUGIN, Reason.MISSING_DEPENDENCY,
                    Reason.SANDBOX_START_FAILED),
}


def status_of(reason: str) -> Status:
    """The status a reason code belongs to (ValueError for an unknown code)."""
    for status, reasons in REASONS_BY_STATUS.items():
        if reason in reasons:
            return status
    raise ValueError(f"unknown reason code {reason!r}")


class HookStatus(StrEnum):
    """How one hook call went (`generate --json`: `plugins[].status`)."""

    OK = "ok"
    SKIPPED = "skipped"
    FAILED = "failed"
    TIMEOUT = "timeout"
    INVALID_OUTPUT = "invalid-output"


class ProblemType(StrEnum):
    """The problem types of the HTTP API: `type` is `urn:dihya:problem:` and the value."""

    BAD_REQUEST = "bad-request"
    MALFORMED_JSON = "malformed-json"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not-found"
    UNKNOWN_PLUGIN = "unknown-plugin"
    UNKNOWN_ACTION = "unknown-action"
    METHOD_NOT_ALLOWED = "method-not-allowed"
    CONFLICT = "conflict"
    PLUGIN_INACTIVE = "plugin-inactive"
    PAYLOAD_TOO_LARGE = "payload-too-large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported-media-type"
    VALIDATION = "validation"
    RATE_LIMITED = "rate-limited"
    INTERNAL = "internal"
    PLUGIN_FAILED = "plugin-failed"
    GENERATION_FAILED = "generation-failed"
    UNAVAILABLE = "unavailable"
    STORE_UNAVAILABLE = "store-unavailable"
    SANDBOX_UNAVAILABLE = "sandbox-unavailable"
    HTTP_ERROR = "http-error"  # any other HTTP error status


class DihyaError(Exception):
    """An error of the core that carries a reason code (a `Reason`, or a code its class
    documents) and a message for people; nothing is ever classified by the message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class FixedReasonError(DihyaError):
    """A `DihyaError` whose class fixes the reason code (`REASON`): raised with a message."""

    REASON: ClassVar[str]

    def __init__(self, message: str) -> None:
        super().__init__(self.REASON, message)
