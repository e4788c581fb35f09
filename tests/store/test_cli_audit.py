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
    code, out = _run(config, "audit", "purge", "--older-than", "0")
    assert code == 0 and out.startswith("removed ")
