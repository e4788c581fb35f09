"""The audit log over HTTP and the GDPR promises: export, purge, nothing personal left.

Real plugins from wheels, a real SQLite file; the logs are captured through the JSON
formatter the server uses.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_api import TODO, Api, problem, write_config

from dihya.audit.logs import json_handler
from dihya.store.tokens import create_token

NAME, EMAIL = "Jane Doe", "jane.doe@example.org"
SUBJECT = "jane.doe@example.org"  # the token's name is the subject id


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = json_handler(stream)
    core = logging.getLogger("dihya")
    old_level = core.level
    core.addHandler(handler)
    # DEBUG: every line the core may write is searched for personal data, the
    # pipeline's generation summary too (at DEBUG under the HTTP view)
    core.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        core.removeHandler(handler)
        core.setLevel(old_level)


@pytest.fixture
def api(plugin_site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Api:
    monkeypatch.delenv("DIHYA_PLUGINS_DISABLE", raising=False)
    name = plugin_site.unique("open")
    plugin_site.install(name)
    # no HTTP purge floor: these tests erase what was just written (the floor has its
    # own tests, test_audit_floor.py)
    config = write_config(tmp_path / "dihya.toml", [plugin_site.entry(name)],
                          '[web]\nrate_limit = "1000/minute"\n'
                          '[audit]\nhttp_purge_min_age_days = 0\n')
    from dihya.web import create_app

    return Api(create_app(config), {"open": name})


def _db_bytes(path: Path) -> bytes:
    conn = sqlite3.connect(path)
    conn.execute("VACUUM")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = path.read_bytes()
    wal = path.with_name(path.name + "-wal")
    return data + (wal.read_bytes() if wal.exists() else b"")


def test_personal_data_in_needs_reaches_no_log_export_or_file(api: Api, logs: io.StringIO,
                                                             tmp_path: Path) -> None:
    needs = dict(TODO, description=f"Built for {NAME} <{EMAIL}>")
    response = api.post("/api/v1/generate", json={"needs": needs})
    assert response.status_code == 200
    assert EMAIL in json.dumps(response.get_json())  # the generated code may carry it
    export = api.get("/api/v1/audit/export", "admin")
    assert export.status_code == 200
    events = export.get_json()
    generation = [e for e in events if e["type"] == "generation"]
    assert len(generation) == 1 and generation[0]["files"] > 5
    assert len(generation[0]["needs_sha256"]) == len(generation[0]["code_sha256"]) == 64
    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    assert any(line.get("type") == "generation" for line in lines)
    assert any(line.get("message", "").startswith("generation") for line in lines)
    data = _db_bytes(tmp_path / "dihya.sqlite3")
    for text in (NAME, EMAIL, "jane.doe"):
        assert text not in logs.getvalue()
        assert text not in export.get_data(as_text=True)
        assert text.encode() not in data


def test_export_and_purge_need_admin(api: Api) -> None:
    problem(api.get("/api/v1/audit/export", "developer"), 403)
    problem(api.post("/api/v1/audit/purge", "developer", json={"subject": "x"}), 403)
    problem(api.get("/api/v1/audit/export", None), 401)
    problem(api.get("/api/v1/audit/export?format=xml", "admin"), 422)
    problem(api.get("/api/v1/audit/export?who=me", "admin"), 422)
    problem(api.post("/api/v1/audit/purge", "admin", json={}), 422)
    problem(api.post("/api/v1/audit/purge", "admin",
                     json={"subject": "a", "older_than_days": 1}), 422)


def test_erasure_leaves_nothing_identifying_in_the_file(api: Api, tmp_path: Path) -> None:
    store = api.app.extensions["dihya"].store
    token = create_token(store, SUBJECT, "admin")
    jane = {"Authorization": f"Bearer {token}"}
    client = api.client
    plugin = api.plugins["open"]
    needs = dict(TODO, description=f"for {NAME}")
    assert client.post("/api/v1/generate", json={"needs": needs}, headers=jane).status_code == 200
    assert client.post(f"/api/v1/plugins/{plugin}/disable", headers=jane,
                       json={"reason": f"asked by {NAME} <{EMAIL}>"}).status_code == 200
    assert client.post(f"/api/v1/plugins/{plugin}/enable", headers=jane).status_code == 200
    mine = client.get(f"/api/v1/audit/export?subject={SUBJECT}", headers=jane).get_json()
    assert [e["type"] for e in mine] == ["generation", "plugin.disabled", "plugin.enabled"]
    assert mine[1]["note"] == f"asked by {NAME} <{EMAIL}>"
    assert len({e["actor"] for e in mine}) == 1
    as_csv = api.get(f"/api/v1/audit/export?subject={SUBJECT}&format=csv", "admin")
    assert as_csv.mimetype == "text/csv"
    assert len(list(csv.DictReader(io.StringIO(as_csv.get_data(as_text=True))))) == 4

    purged = api.post("/api/v1/audit/purge", "admin", json={"subject": SUBJECT})
    assert purged.status_code == 200, purged.get_data(as_text=True)
    assert purged.get_json() == {"events": 5, "notes": 1, "tokens": 1, "switches": 1,
                                 "logs": 0, "retention": 0, "floor_days": 0,
                                 "kept_events": 0, "kept_logs": 0, "kept_reason": None}
    problem(client.get("/api/v1/plugins", headers=jane), 401)  # the token went with them
    assert api.get(f"/api/v1/audit/export?subject={SUBJECT}", "admin").get_json() == []
    data = _db_bytes(tmp_path / "dihya.sqlite3")
    for text in (NAME, EMAIL, "jane.doe", "asked by"):
        assert text.encode() not in data, text
    everything = api.get("/api/v1/audit/export", "admin").get_json()
    assert [e["type"] for e in everything if e["type"] in ("audit.purged", "audit.retention")
            ][-2:] == ["audit.purged", "audit.retention"]
    assert api.app.extensions["dihya"].auditor.log.verify().ok


def test_older_than_purge_over_http(api: Api) -> None:
    api.post("/api/v1/generate", json={"needs": TODO})
    answer = api.post("/api/v1/audit/purge", "admin", json={"older_than_days": 0})
    assert answer.status_code == 200 and answer.get_json()["events"] >= 1
    types = [e["type"] for e in api.get("/api/v1/audit/export", "admin").get_json()]
    assert types == ["audit.purged", "audit.retention"]
    assert api.app.extensions["dihya"].auditor.log.verify().ok


def test_startup_audits_discovery_and_retention(api: Api) -> None:
    events = api.get("/api/v1/audit/export", "admin").get_json()
    mine = [e for e in events if e.get("plugin") == api.plugins["open"]]
    assert [e["type"] for e in mine] == ["plugin.discovered"]
    assert mine[0]["plugin_fingerprint"].startswith("sha256:")
    others = {e["plugin"]: e for e in events if e["type"] == "plugin.refused"}
    assert all(e["reason"] == "not-allowlisted" for e in others.values())
    assert [e["type"] for e in events if "plugin" not in e][:1] == ["audit.retention"]

