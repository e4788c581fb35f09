"""The one canonical JSON of the core: the text that is hashed wherever a hash of data is
recorded (the audit chain, `needs_sha256` and `code_sha256` in reports and audit events),
so an auditor can match a report with its audit event.

Sorted keys, no spaces, UTF-8 (non-ASCII characters as themselves), no NaN or infinity.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_text(value: Any) -> str:
    """The canonical JSON text of `value`."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def canonical_bytes(value: Any) -> bytes:
    """`canonical_text(value)` in UTF-8: what is hashed and what its size is counted in."""
    return canonical_text(value).encode("utf-8")


def canonical_sha256(value: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of `value`."""
    return hashlib.sha256(canonical_bytes(value)).hexdigest()
