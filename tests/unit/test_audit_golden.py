"""The audit's bytes never change: chain rows, hashes, log lines and needs hashes computed
today are those the core computed before its fast paths (`support/audit_golden.json`, made
by the core at f4e8922; see `support.audit_golden`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from dihya.audit import AuditEvent, AuditLine, _log_line
from dihya.audit.chain import GENESIS, row_hash
from support import audit_golden

GOLDEN = json.loads((Path(audit_golden.__file__).parent / "audit_golden.json").read_text())


def test_rows_hashes_log_lines_and_needs_hash_are_the_golden_ones() -> None:
    now = audit_golden.compute()
    for mine, golden in zip(now["rows"], GOLDEN["rows"], strict=True):
        assert mine == golden, golden["seq"]
    for mine, golden in zip(now["lines"], GOLDEN["lines"], strict=True):
        assert mine == golden
    assert now["needs_sha256"] == GOLDEN["needs_sha256"]


def test_the_golden_chain_links_and_rehashes() -> None:
    """`row_hash` over the stored columns (what `dihya audit verify` does) gives each
    golden row's hash, and each row links to the one before."""
    prev = GENESIS
    for row in GOLDEN["rows"]:
        assert row["prev_hash"] == prev
        assert row_hash(prev, row) == row["hash"]
        prev = row["hash"]


def test_a_changed_byte_changes_the_hash() -> None:
    row = dict(GOLDEN["rows"][0])
    row["fields"] = row["fields"].replace("3.21", "3.210")  # the same number, other text
    assert row_hash(GENESIS, row) != GOLDEN["rows"][0]["hash"]


@pytest.mark.parametrize("fields", audit_golden.EVENTS)
def test_the_log_message_is_the_events_sorted_json(fields: dict, caplog: pytest.LogCaptureFixture
                                                   ) -> None:
    event = AuditEvent(**fields)
    with caplog.at_level(logging.INFO, logger="dihya.audit"):
        _log_line(event)
    [record] = [r for r in caplog.records if r.name == "dihya.audit"]
    assert record.getMessage() == json.dumps(event.to_json(), sort_keys=True,
                                             separators=(",", ":"))
    assert isinstance(record.msg, AuditLine)
    # the fields it carries for the formatter are what parsing its text gives
    carried = getattr(record.msg, "fields", None)
    if carried is not None:
        assert carried == json.loads(record.getMessage())
