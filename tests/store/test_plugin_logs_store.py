"""Plugin log records in the store, on SQLite and PostgreSQL: a real plugin from a wheel logs
during a generation; `dihya plugins logs` reads its lines redacted; `dihya audit export
--plugin` and `purge --plugin` touch only that plugin's records; `dihya audit verify` still
passes after the purge; retention removes old records."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from click.testing import CliRunner

from dihya.audit import Auditor
from dihya.audit.gdpr import apply_retention
from dihya.cli import main
from dihya.pipeline import run_generation
from dihya.pluginlog import LogLimits, PluginLogRecord, collecting
from dihya.registry import build_registry
from dihya.store import Store, audit_payload_table, plugin_logs_table
from dihya.store.pluginlogs import read, write
from support.wheels import plugin_source

PERSONAL = {"name": "Jane Doe", "email": "jane.doe@example.org", "phone": "+33 6 12 34 56 78"}

LOGS = '''
def before_generation(self, needs):
    c = needs["x-contact"]
    self.logger.info("tidying for %s <%s>, tel %s", c["name"], c["email"], c["phone"])
    return needs

def after_generation(self, code, needs):
    self.logger.warning("wrote %d files for %s", len(code), needs["x-contact"]["name"])
    for i in range(needs.get("x-flood", 0)):
        self.logger.debug("never kept: below INFO %d", i)
        self.logger.info("flood %d", i)
    return code
'''


def _run(config: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--config", str(config), *args])
    return result.exit_code, result.stdout


def _generate(plugin_site: Any, needs: dict[str, Any], names: list[str], store: Store,
              limits: LogLimits | None = None) -> list[PluginLogRecord]:
    config = plugin_site.config(*(plugin_site.entry(n) for n in names))
    snap = build_registry(config, path=plugin_site.path)
    try:
        personal = copy.deepcopy(needs)
        personal["x-contact"] = dict(PERSONAL)
        personal["x-flood"] = 300
        with collecting("req-1", personal, limits) as logs:
            run_generation(personal, snap, request_id="req-1")
        records = logs.finish()
    finally:
        snap.close()
    write(store, records)
    return records


def test_read_export_purge_by_plugin_and_verify(plugin_site, needs, tmp_path: Path,
                                                store_url: str, store: Store) -> None:
    names = [plugin_site.unique("alog"), plugin_site.unique("blog")]
    for name in names:
        plugin_site.install(name, source=plugin_source(name, body=LOGS))
    one, other = names
    config = tmp_path / "dihya.toml"
    config.write_text(f'[plugins]\n[store]\nurl = "{store_url}"\n')
    auditor = Auditor(store=store)
    # audit events naming each plugin, one with a note (free text)
    auditor.record("plugin.disabled", "ok", subject="ops", plugin=one, note="Jane asked")
    auditor.record("plugin.disabled", "ok", subject="ops", plugin=other, note="Bob asked")
    _generate(plugin_site, needs, names, store, LogLimits(records=20, record_bytes=500))

    code, out = _run(config, "plugins", "logs", one, "--json")
    assert code == 0, out
    lines = json.loads(out)
    assert len(lines) == 21  # the cap, then the count of what it dropped
    assert lines[0]["message"] == "tidying for [needs] <[email]>, tel [phone]"
    assert lines[-1]["level"] == "WARNING" and lines[-1]["args"][1] == 20
    for value in PERSONAL.values():
        assert value not in out
    code, text = _run(config, "plugins", "logs", one, "--level", "warning")
    assert code == 0
    assert [line.split()[1] for line in text.splitlines()] == ["WARNING", "WARNING"]
    assert "wrote " in text and "files for [needs]" in text and "req-1" in text
    code, text = _run(config, "plugins", "logs", one, "--since", "1h")
    assert code == 0 and len(text.splitlines()) == 21
    code, text = _run(config, "plugins", "logs", one, "--since", "2999-01-01")
    assert code == 0 and text == ""
    code, _ = _run(config, "plugins", "logs", one, "--since", "yesterday")
    assert code == 2

    code, out = _run(config, "audit", "export", "--plugin", one)
    assert code == 0, out
    exported = json.loads(out)
    assert exported["plugin"] == one
    assert [e["plugin"] for e in exported["events"]] == [one]
    assert exported["events"][0]["note"] == "Jane asked"
    assert {r["plugin"] for r in exported["logs"]} == {one} and len(exported["logs"]) == 21
    code, out = _run(config, "audit", "export", "--plugin", one, "--format", "jsonl")
    kinds = [json.loads(line)["kind"] for line in out.splitlines()]
    # the first export is itself an event naming the plugin
    assert code == 0 and kinds.count("event") == 2 and kinds.count("log") == 21
    assert _run(config, "audit", "export", "--plugin", one, "--format", "csv")[0] == 2

    code, out = _run(config, "audit", "purge", "--plugin", one)
    assert code == 0, out
    assert "21 log records and 1 note removed; its 3 audit events stay" in out
    assert read(store, one) == []
    assert len(read(store, other)) == 21  # the other plugin's records are untouched
    with store.begin() as conn:
        notes = sorted(conn.execute(sa.select(audit_payload_table.c.payload)).scalars())
    assert notes == ["Bob asked"]
    code, out = _run(config, "audit", "verify")
    assert code == 0 and out.startswith("ok: "), out
    purged = [e for e in json.loads(_run(config, "audit", "export")[1])
              if e["type"] == "audit.purged"]
    assert [(e["plugin"], e["reason"], e["count"]) for e in purged] == [(one, "plugin", 21)]
    assert _run(config, "audit", "purge", "--plugin", one, "--subject", "x")[0] == 2


def test_a_plugins_purge_with_a_floor_leaves_recent_records(store: Store) -> None:
    from dihya.audit.gdpr import purge_plugin

    now = time.time()
    write(store, [PluginLogRecord(now - 2 * 86400, "p", "1.0", None, "INFO", "old", []),
                  PluginLogRecord(now, "p", "1.0", None, "INFO", "new", []),
                  PluginLogRecord(now - 2 * 86400, "q", "1.0", None, "INFO", "other", [])])
    auditor = Auditor(store=store)
    counts = purge_plugin(auditor, "p", actor="admin", before=now - 86400)
    assert (counts["logs"], counts["kept_logs"]) == (1, 1)
    assert [r.message for r in read(store, "p")] == ["new"]
    assert [r.message for r in read(store, "q")] == ["other"]  # another plugin's: untouched
    assert purge_plugin(auditor, "p", actor="admin")["logs"] == 1  # no floor: every record
    assert read(store, "p") == []


def test_retention_removes_old_records(store: Store) -> None:
    old = PluginLogRecord(time.time() - 40 * 86400, "p", "1.0", None, "INFO", "old", [])
    new = PluginLogRecord(time.time(), "p", "1.0", None, "INFO", "new %s", ["[needs]"])
    write(store, [old, new])
    auditor = Auditor(store=store)
    apply_retention(auditor, 365, interval_s=0, plugin_log_days=30)
    assert [r.message for r in read(store, "p")] == ["new [needs]"]
    with store.begin() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(
            plugin_logs_table)).scalar_one() == 1
    assert auditor.log is not None and auditor.log.verify().ok
    retention = [(r.get("reason"), r["count"]) for r in auditor.log.rows()
                 if r["type"] == "audit.retention"]
    assert retention == [(None, 0), ("plugin-logs", 1)]
