"""What a newcomer's walkthrough of the guides found, each through the real `dihya` in a
real venv (the wheels of this checkout), so that it cannot come back.

- `dihya audit export --plugin NAME` gives each event as the full export does: docs/api.md
  and docs/gdpr.md say every exported event has its `event_id` and its time as ISO 8601
  (`at_iso`) beside `at`; the per-plugin export left out `event_id`, and in JSON `at_iso`
  too, so its events could not be matched with the full export's.
- `dihya generate -o FILE/out --json` printed no report although the operator guide shows
  `{"error": "write-failed", "message", "plugins"}`, and its message named two paths run
  together (`cannot create /x/notes.txt /x/notes.txt/out: …`) without saying what to do.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TODO = ROOT / "examples" / "needs" / "todo.json"

pytestmark = pytest.mark.slow


def test_plugin_export_rows_are_the_full_exports_rows(backend) -> None:
    approved = backend.dihya("plugins", "approve", "example")
    assert approved.returncode == 0, approved.stderr
    disabled = backend.dihya("plugins", "disable", "example", "--reason", "OPS-42")
    assert disabled.returncode == 0, disabled.stderr
    enabled = backend.dihya("plugins", "enable", "example")
    assert enabled.returncode == 0, enabled.stderr

    by_plugin = backend.json("audit", "export", "--plugin", "example")
    lines = backend.dihya("audit", "export", "--plugin", "example", "--format", "jsonl")
    assert lines.returncode == 0, lines.stderr
    jsonl = [json.loads(line) for line in lines.stdout.splitlines()]
    full = {e["seq"]: e for e in backend.json("audit", "export")}  # type: ignore[union-attr]

    events = by_plugin["events"]  # type: ignore[index]
    assert {e["type"] for e in events} >= {"plugin.approved", "plugin.disabled",
                                           "plugin.enabled"}
    for event in events:
        assert event == full[event["seq"]]
        assert event["event_id"] and event["at_iso"].endswith("Z")
    # JSON Lines: the same rows, with their kind (and the first export's own event)
    rows = [{k: v for k, v in row.items() if k != "kind"} for row in jsonl
            if row["kind"] == "event"]
    assert rows[:len(events)] == events
    assert all(row == full[row["seq"]] for row in rows)


def test_generate_into_a_path_through_a_file_reports_json(backend) -> None:
    approved = backend.dihya("plugins", "approve", "example")
    assert approved.returncode == 0, approved.stderr
    blocker = backend.home / "notes.txt"
    blocker.write_text("my notes\n")
    ran = backend.dihya("generate", str(TODO), "-o", "notes.txt/out", "--json")
    assert ran.returncode == 1, ran.stderr
    report = json.loads(ran.stdout)
    assert report["error"] == "write-failed"
    # the generation ran (the report says how each hook went); only the write failed
    assert [(h["name"], h["status"]) for h in report["plugins"]] == [
        ("example", "ok"), ("example", "ok")]
    message = report["message"]
    assert message.startswith(f"cannot create the directory of {blocker}/out: ")
    assert "is as it was" in message and "choose another -o" in message
    (line,) = [ln for ln in ran.stderr.splitlines() if ln.startswith("Error:")]
    assert line == f"Error: {message}"
    assert blocker.read_text() == "my notes\n"
    text = backend.dihya("generate", str(TODO), "-o", "notes.txt/out")
    assert text.returncode == 1 and text.stdout == ""
    assert f"Error: {message}" in text.stderr
