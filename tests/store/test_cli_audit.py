"""`dihya audit export|purge|verify` and the CLI's own events, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import sqlalchemy as sa
from click.testing import CliRunner

from dihya.cli import main
from dihya.store import Store


def _run(config: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--config", str(config), *args])
    return result.exit_code, result.output


def _config(tmp_path: Path, store_url: str) -> Path:
    config = tmp_path / "dihya.toml"
    config.write_text(f'[plugins]\n[store]\nurl = "{store_url}"\n[audit]\nretention_days = 30\n')
    return config


def test_export_purge_verify(tmp_path: Path, store_url: str) -> None:
    config = _config(tmp_path, store_url)
    assert _run(config, "tokens", "create", "--role", "admin", "--name", "jane@example.org")[0] == 0
    assert _run(config, "tokens", "create", "--role", "viewer", "--name", "bob")[0] == 0
    code, out = _run(config, "audit", "export", "--subject", "jane@example.org")
    assert code == 0
    events = json.loads(out)
    assert [e["type"] for e in events] == ["token.created"] and "jane" not in out
    code, out = _run(config, "audit", "export", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["type"] for r in rows] == ["token.created", "token.created", "audit.exported"]
    code, out = _run(config, "audit", "verify")
    assert code == 0 and out.startswith("ok: 4 rows verified")
    assert _run(config, "audit", "purge")[0] == 2
    assert _run(config, "audit", "purge", "--subject", "x", "--older-than", "3")[0] == 2
    code, out = _run(config, "audit", "purge", "--subject", "jane@example.org")
    assert code == 0 and "1 tokens" in out and "retention (30 days)" in out
    assert json.loads(_run(config, "audit", "export", "--subject", "jane@example.org")[1]) == []
    code, out = _run(config, "audit", "verify", "--json")
    assert code == 0 and json.loads(out)["ok"] is True
    store = Store(store_url)
    with store.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM dihya_audit WHERE seq = 2"))
    store.engine.dispose()
    code, out = _run(config, "audit", "verify")
    assert code == 1 and "row 2 is missing" in out
    # the HTTP purge floor ([audit] http_purge_min_age_days, 1 day here by default) does
    # not bind the CLI: every event goes, the ones just written included
    code, out = _run(config, "audit", "purge", "--older-than", "0")
    assert code == 0 and out.startswith("removed ")
    code, out = _run(config, "audit", "export")
    assert [e["type"] for e in json.loads(out)] == ["audit.purged", "audit.retention"]


def test_export_and_tail_show_iso_times(tmp_path: Path, store_url: str) -> None:
    import datetime as dt

    config = _config(tmp_path, store_url)
    assert _run(config, "tokens", "create", "--role", "admin", "--name", "ops")[0] == 0
    assert _run(config, "plugins", "disable", "nope", "--reason", "Jane asked")[0] in (0, 1)
    code, out = _run(config, "audit", "export")
    events = json.loads(out)
    for event in events:
        parsed = dt.datetime.fromisoformat(event["at_iso"])
        assert event["at_iso"].endswith("Z") and abs(parsed.timestamp() - event["at"]) < 0.001
    rows = list(csv.DictReader(io.StringIO(_run(config, "audit", "export", "--format",
                                                "csv")[1])))
    assert rows[0]["at_iso"].endswith("Z") and float(rows[0]["at"]) > 0
    code, out = _run(config, "audit", "tail", "-n", "2")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2 and "audit.exported" in lines[-1]
    assert dt.datetime.fromisoformat(lines[0].split()[0]).tzinfo is not None
    code, out = _run(config, "audit", "tail", "--json")
    tailed = [json.loads(line) for line in out.splitlines()]
    assert [e["seq"] for e in tailed] == sorted(e["seq"] for e in tailed)
    assert all("at_iso" in e and "note" not in e for e in tailed)
    assert "Jane" not in out


def test_tail_follow_shows_new_events_as_they_are_committed(tmp_path: Path,
                                                             store_url: str) -> None:
    import subprocess
    import sys
    import threading
    import time

    config = _config(tmp_path, store_url)
    assert _run(config, "tokens", "create", "--role", "admin", "--name", "first")[0] == 0
    proc = subprocess.Popen([str(Path(sys.prefix) / "bin" / "dihya"), "--config", str(config),
                             "audit", "tail", "--follow", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def wait_for(text: str) -> None:
        deadline = time.monotonic() + 60
        while not any(text in line for line in lines):
            assert time.monotonic() < deadline, f"no {text!r} in {lines}"
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)

    try:
        wait_for('"token.created"')
        assert _run(config, "tokens", "revoke", "first")[0] == 0
        wait_for('"token.revoked"')
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        reader.join(timeout=10)
    events = [json.loads(line) for line in lines]
    assert [e["type"] for e in events] == ["token.created", "token.revoked"]
    assert events[1]["seq"] > events[0]["seq"] and events[1]["at_iso"].endswith("Z")
