"""Golden audit data: fixed events, the chain rows, log lines and a needs hash they give.

`audit_golden.json` beside this file is what this module printed when run against the core
as it was before the audit's fast paths (commit f4e8922, `json.dumps` everywhere):

    PYTHONPATH=<that core> python tests/support/audit_golden.py > tests/support/audit_golden.json

`tests/unit/test_audit_golden.py` recomputes it with today's core and requires the very
same bytes, so a faster encoder or a reshuffled append can never change the hashed text of
a row (stored chains would stop verifying), an event's log line, or a needs hash. The
events cover the awkward values: non-ASCII and astral characters, quotes, backslashes,
controls, DEL and U+2028, ints beyond 64 bits, floats written with an exponent, -0.0, the
smallest subnormal, a nested value, no event id (rows written before schema version 3).
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any

EVENTS: list[dict[str, Any]] = [
    dict(type="generation", outcome="ok", at=1.0, role="developer",
         request_id="0123456789abcdef0123456789abcdef", needs_sha256="a" * 64, needs_bytes=734,
         code_sha256="b" * 64, code_bytes=48121, files=19, plugins_ok=2, plugins_failed=0,
         duration_ms=3.21, event_id="00" * 16),
    dict(type="plugin.disabled", outcome="ok", at=1.0, plugin="plügin-名前",
         plugin_version="1.0.0rc1", plugin_fingerprint="c" * 64, reason="acl",
         event_id="01" * 16),
    dict(type="hook.failed", outcome="failed", at=1.0, plugin="emoji-😀",
         action="after_generation", reason="timeout", duration_ms=1e-07, event_id="02" * 16),
    dict(type="audit.purged", outcome="ok", at=1.0, count=2**70, days=1e16,
         event_id="03" * 16),
    dict(type="audit.retention", outcome="ok", at=1.0, count=-(2**64) - 1, days=365.25,
         event_id="04" * 16),
    dict(type="pth.acknowledged", outcome="ok", at=1.0,
         pth_file="a\"b\\c\u2028d\x7fe\x00f\tg\U0010ffff.pth", pth_sha256="d" * 64,
         event_id="05" * 16),
    dict(type="plugin.action", outcome="invalid", at=1.0, action="nested",
         files=[1, 2.5, "é", None, True, {"z": 1, "a": [0.1, 1e22]}], duration_ms=0.0001,
         event_id="06" * 16),
    dict(type="audit.exported", outcome="ok", at=1.0, format="csv", count=0, days=-0.0,
         duration_ms=123456789012345.67),
    dict(type="token.created", outcome="denied", at=1.0, role="admin", needs_bytes=True,
         duration_ms=5e-324),
]
#: the time each event is appended at (taken under the chain's lock)
NOW = [1733131200.123456, 1733131200.5, 1e9, 1733131201.0, 1733131202.000001, 1733131203.25,
       1733131204.999999, 1733131205.1, 1733131206.0]
#: (subject, target) of each event, pseudonymised with PSEUDONYMS
SUBJECTS = [("jane", None), (None, None), ("Jöhn Dœ", "jane"), ("admin", "user-1"),
            (None, "jane"), ("jane", None), (None, None), ("admin", "Jöhn Dœ"), ("jane", "jane")]
PSEUDONYMS = {"jane": "p-0123456789abcdef0123", "Jöhn Dœ": "p-fedcba9876543210fedc",
              "admin": "p-00000000000000000001", "user-1": "p-99999999999999999999"}
NEEDS = {"name": "Tödö ✓", "entities": [{"name": "Item", "fields": [
    {"name": "title", "type": "string", "max": 2**80}, {"n": 1.5e-9}, {"n": 12.5}]}],
    "flags": [True, False, None], "": {"\U0001f600": "\u2028"}}
ROW_COLUMNS = ("seq", "at", "type", "outcome", "actor", "target", "fields", "commitment",
               "prev_hash", "hash", "event_id")


def compute() -> dict[str, Any]:
    """The chain rows of EVENTS, their log lines (message, JSON and text formats) and the
    canonical SHA-256 of NEEDS, by the core that is imported."""
    from dihya.audit import AuditEvent, _log_line
    from dihya.audit.chain import GENESIS, AuditLog, Pending
    from dihya.audit.logs import JsonFormatter, TextFormatter
    from dihya.canonical import canonical_sha256

    rows = []
    prev = GENESIS
    for seq, (fields, now, (subject, target)) in enumerate(zip(EVENTS, NOW, SUBJECTS,
                                                             strict=True), start=1):
        _event, row, _payload = AuditLog._row(seq, prev, now,
                                              Pending(AuditEvent(**fields), subject, target),
                                              PSEUDONYMS)
        rows.append({k: row[k] for k in ROW_COLUMNS})
        prev = row["hash"]

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    audit_log = logging.getLogger("dihya.audit")
    keep = Keep()
    old_level = audit_log.level
    audit_log.addHandler(keep)
    audit_log.setLevel(logging.INFO)
    try:
        for fields in EVENTS:
            _log_line(AuditEvent(**fields))
    finally:
        audit_log.removeHandler(keep)
        audit_log.setLevel(old_level)
    lines = [[r.getMessage(), JsonFormatter().format(r), TextFormatter().format(r)]
             for r in records]
    return {"rows": rows, "lines": lines, "needs_sha256": canonical_sha256(NEEDS)}


if __name__ == "__main__":
    out = io.StringIO()
    json.dump(compute(), out, indent=1, ensure_ascii=True)
    print(out.getvalue())
