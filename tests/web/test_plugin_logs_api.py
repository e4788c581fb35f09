"""Plugin logs over HTTP: real plugins from wheels, one sandboxed and one in-process, log at
import, in each hook and in an action, with values from needs holding a name, an e-mail
address and a phone number. Admins read the lines redacted; a flood is capped; export and
purge by plugin touch only that plugin's records; the audit chain still verifies."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from test_api import TODO, Api, problem, write_config

from support.wheels import plugin_source

PERSONAL = {"name": "Jane Doe", "email": "jane.doe@example.org", "phone": "+33 6 12 34 56 78"}

LOGS = '''
def before_generation(self, needs):
    c = needs["x-contact"]
    self.logger.info("tidying for %s <%s>, tel %s", c["name"], c["email"], c["phone"])
    return needs

def after_generation(self, code, needs):
    self.logger.warning(f"wrote {len(code)} files for {needs['x-contact']['name']}")
    for i in range(needs.get("x-flood", 0)):
        self.logger.info("flood %d", i)
    return code

@action("greet", input_schema={"type": "object", "properties": {"who": {"type": "string"}}})
def greet(self, payload):
    self.logger.info("greeting %s", payload["who"])
    return {"ok": True}
'''


def _source(name: str) -> str:
    return ("import logging\nfrom dihya import action\n" + plugin_source(name, body=LOGS)
            + f'\nlogging.getLogger("dihya.plugin.{name}").info("imported")\n')


@pytest.fixture
def api(plugin_site: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv("DIHYA_PLUGINS_DISABLE", raising=False)
    names = {"sandboxed": plugin_site.unique("sbx"), "inproc": plugin_site.unique("inp")}
    for name in names.values():
        plugin_site.install(name, source=_source(name))
    entries = [plugin_site.entry(names["sandboxed"], mode="sandbox"),
               plugin_site.entry(names["inproc"])]
    # no HTTP purge floor: these tests erase what was just logged (the floor has its own
    # tests, test_audit_floor.py)
    config = write_config(tmp_path / "dihya.toml", entries,
                          '[web]\nrate_limit = "1000/minute"\n'
                          '[audit]\nhttp_purge_min_age_days = 0\n', plugins="log_records = 30")
    from dihya.web import create_app

    app = create_app(config)
    yield Api(app, names)
    app.extensions["dihya"].close()


def _personal_needs(flood: int = 0) -> dict[str, Any]:
    needs = copy.deepcopy(TODO)
    needs["x-contact"] = dict(PERSONAL)
    needs["x-flood"] = flood
    return needs


def _no_personal_data(text: str) -> None:
    for value in (*PERSONAL.values(), "Jane", "jane"):
        assert value not in text, value


def test_admins_read_redacted_lines_of_each_plugin(api: Api) -> None:
    response = api.post("/api/v1/generate", json={"needs": _personal_needs()})
    assert response.status_code == 200, response.get_data(as_text=True)
    request_id = response.headers["X-Request-Id"]
    for name in api.plugins.values():
        got = api.get(f"/api/v1/plugins/{name}/logs", "admin")
        assert got.status_code == 200
        text = got.get_data(as_text=True)
        _no_personal_data(text)
        lines = got.get_json()
        assert [line["message"] for line in lines][:2] == [
            "imported", "tidying for [needs] <[email]>, tel [phone]"]
        assert lines[2]["template"].startswith("wrote ") and lines[2]["level"] == "WARNING"
        assert lines[2]["template"].endswith(" files for [needs]")
        assert {line["request_id"] for line in lines} == {request_id}
        assert {line["plugin"] for line in lines} == {name}
    name = api.plugins["sandboxed"]
    warnings = api.get(f"/api/v1/plugins/{name}/logs?level=WARNING&limit=5", "admin")
    assert [line["level"] for line in warnings.get_json()] == ["WARNING"]
    assert api.get(f"/api/v1/plugins/{name}/logs?since=99999999999", "admin").get_json() == []
    problem(api.get(f"/api/v1/plugins/{name}/logs?level=LOUD", "admin"), 422)
    problem(api.get(f"/api/v1/plugins/{name}/logs?what=1", "admin"), 422)
    problem(api.get(f"/api/v1/plugins/{name}/logs", "viewer"), 403)
    problem(api.get(f"/api/v1/plugins/{name}/logs", None), 401)


def test_an_action_logs_with_its_payload_redacted(api: Api) -> None:
    for name in api.plugins.values():
        response = api.post(f"/api/v1/plugins/{name}/actions/greet",
                            json={"who": "Jane Doe"})
        assert response.status_code == 200, response.get_data(as_text=True)
        lines = api.get(f"/api/v1/plugins/{name}/logs", "admin").get_json()
        assert [line["message"] for line in lines][-1] == "greeting [needs]"
        _no_personal_data(json.dumps(lines))


def test_a_flood_is_capped_per_plugin(api: Api) -> None:
    response = api.post("/api/v1/generate", json={"needs": _personal_needs(flood=10_000)})
    assert response.status_code == 200
    for name in api.plugins.values():
        lines = api.get(f"/api/v1/plugins/{name}/logs", "admin").get_json()
        assert len(lines) == 31
        assert lines[-1]["level"] == "WARNING" and lines[-1]["args"][1] == 30
        assert lines[-1]["args"][0] == 10_000 + 3 - 30


def test_export_and_purge_by_plugin(api: Api) -> None:
    sandboxed, inproc = api.plugins["sandboxed"], api.plugins["inproc"]
    assert api.post("/api/v1/generate", json={"needs": _personal_needs()}).status_code == 200
    assert api.post(f"/api/v1/plugins/{sandboxed}/actions/greet",
                    json={"who": "Jane Doe"}).status_code == 200
    export = api.get(f"/api/v1/audit/export?plugin={sandboxed}", "admin")
    assert export.status_code == 200
    body = export.get_json()
    _no_personal_data(export.get_data(as_text=True))
    assert body["plugin"] == sandboxed
    events = body["events"]
    assert {e["plugin"] for e in events} == {sandboxed}
    assert [e["type"] for e in events][-1] == "plugin.action"
    assert {line["plugin"] for line in body["logs"]} == {sandboxed} and len(body["logs"]) == 4
    problem(api.get(f"/api/v1/audit/export?plugin={sandboxed}&format=csv", "admin"), 422)
    problem(api.get(f"/api/v1/audit/export?plugin={sandboxed}&subject=x", "admin"), 422)
    problem(api.get(f"/api/v1/audit/export?plugin={sandboxed}", "developer"), 403)

    purged = api.post("/api/v1/audit/purge", "admin", json={"plugin": sandboxed})
    assert purged.status_code == 200, purged.get_data(as_text=True)
    counts = purged.get_json()
    assert counts["logs"] == 4 and counts["events"] == len(events) + 1  # and the export
    assert api.get(f"/api/v1/plugins/{sandboxed}/logs", "admin").get_json() == []
    assert len(api.get(f"/api/v1/plugins/{inproc}/logs", "admin").get_json()) == 3
    log = api.app.extensions["dihya"].auditor.log
    assert log.verify().ok
    problem(api.post("/api/v1/audit/purge", "admin",
                     json={"plugin": sandboxed, "subject": "x"}), 422)
    other = api.post("/api/v1/audit/purge", "admin", json={"older_than_days": 1000})
    assert other.status_code == 200 and other.get_json()["logs"] == 0


def test_the_console_purges_a_plugins_logs_after_a_preview(api: Api) -> None:
    from support.console import Console

    assert api.post("/api/v1/generate", json={"needs": _personal_needs()}).status_code == 200
    sandboxed, inproc = api.plugins["sandboxed"], api.plugins["inproc"]
    admin = Console(api.app)
    assert admin.sign_in(api.tokens["admin"]).status_code == 303
    page = admin.get("/admin/audit").get_data(as_text=True)
    assert f'<option value="{sandboxed}">' in page and 'id="purge-plugin"' in page
    kept = len(api.get(f"/api/v1/plugins/{sandboxed}/logs", "admin").get_json())
    assert kept == 3
    preview = admin.post("/admin/audit/purge", {"plugin": sandboxed})
    html = preview.get_data(as_text=True)
    assert preview.status_code == 200 and f"<strong>{kept}</strong> log records" in html
    # the preview removed nothing
    assert len(api.get(f"/api/v1/plugins/{sandboxed}/logs", "admin").get_json()) == kept
    done = admin.post("/admin/audit/purge", {"plugin": sandboxed, "confirm": "yes"})
    assert done.status_code == 303
    assert api.get(f"/api/v1/plugins/{sandboxed}/logs", "admin").get_json() == []
    assert len(api.get(f"/api/v1/plugins/{inproc}/logs", "admin").get_json()) == 3
    assert api.app.extensions["dihya"].auditor.log.verify().ok
    assert admin.post("/admin/audit/purge", {"plugin": sandboxed, "subject": "x"}) \
        .status_code == 422
    assert admin.post("/admin/audit/purge", {"plugin": "a/b"}).status_code == 422


def test_the_console_plugin_page_shows_recent_lines_to_admins(api: Api) -> None:
    from support.console import Console

    assert api.post("/api/v1/generate", json={"needs": _personal_needs()}).status_code == 200
    name = api.plugins["sandboxed"]
    admin = Console(api.app)
    assert admin.sign_in(api.tokens["admin"]).status_code == 303
    page = admin.get(f"/admin/plugins/{name}").get_data(as_text=True)
    assert "Log lines of" in page
    assert "tidying for [needs] &lt;[email]&gt;, tel [phone]" in page
    _no_personal_data(page)
    viewer = Console(api.app)
    assert viewer.sign_in(api.tokens["viewer"]).status_code == 303
    page = viewer.get(f"/admin/plugins/{name}").get_data(as_text=True)
    assert "Log lines of" not in page and "tidying" not in page
