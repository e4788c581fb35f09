"""The HTTP API through Flask's test client, with real plugins installed from wheels."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest

from dihya.config import AllowEntry
from dihya.store.tokens import create_token
from dihya.web import create_app
from support.wheels import plugin_source

PROBLEM = "application/problem+json"
ACTION_PLUGIN = '''
from dihya import action

@action("echo", input_schema={"type": "object", "required": ["text"],
                              "additionalProperties": False,
                              "properties": {"text": {"type": "string", "maxLength": 20}}})
def echo(self, payload):
    import os
    with open(os.environ["DIHYA_TEST_CALLS"], "a") as fh:
        fh.write("call\\n")
    if payload["text"] == "boom":
        raise RuntimeError("secret detail")
    if payload["text"] == "bad":
        return ["not", "an", "object"]
    return {"text": payload["text"].upper()}

def after_generation(self, code, needs):
    code["EXTRA.txt"] = "hello\\n"
    return code
'''


def write_config(path: Path, entries: list[AllowEntry], extra: str = "",
                 plugins: str = "") -> Path:
    """A config allowing `entries`; `plugins`: more [plugins] keys, `extra`: more tables."""
    lines = ["[plugins]", "hook_timeout_s = 2.0", *plugins.splitlines()]
    for e in entries:
        lines += ["[[plugins.allow]]", f'name = "{e.name}"', f'distribution = "{e.distribution}"',
                  f'version = "{e.version}"', f'fingerprint = "{e.fingerprint}"',
                  f'mode = "{e.mode}"']
        if e.roles is not None:
            lines.append(f"roles = {json.dumps(list(e.roles))}")
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


class Api:
    """A test client with one token per role."""

    def __init__(self, app: Any, plugins: dict[str, str]) -> None:
        self.app = app
        self.client = app.test_client()
        self.plugins = plugins
        store = app.extensions["dihya"].store
        self.tokens = {role: create_token(store, f"{role}-user", role)
                       for role in ("admin", "developer", "viewer")}

    def headers(self, role: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}

    def get(self, url: str, role: str | None = "viewer") -> Any:
        return self.client.get(url, headers=self.headers(role))

    def post(self, url: str, role: str | None = "developer", **kw: Any) -> Any:
        return self.client.post(url, headers={**self.headers(role), **kw.pop("headers", {})},
                                **kw)


@pytest.fixture
def api(plugin_site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Api:
    monkeypatch.setenv("DIHYA_TEST_CALLS", str(tmp_path / "calls.txt"))
    monkeypatch.delenv("DIHYA_PLUGINS_DISABLE", raising=False)
    names = {"open": plugin_site.unique("open"), "admins": plugin_site.unique("admins")}
    plugin_site.install(names["open"], source=plugin_source(names["open"], body=ACTION_PLUGIN))
    plugin_site.install(names["admins"])
    entries = [plugin_site.entry(names["open"]),
               plugin_site.entry(names["admins"], roles=("admin",))]
    config = write_config(tmp_path / "dihya.toml", entries,
                          '[web]\nrate_limit = "1000/minute"\n[audit]\nkey = "test-key"\n')
    return Api(create_app(config), names)


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.content_type == PROBLEM
    body: dict[str, Any] = response.get_json(force=True)
    assert {"type", "title", "status", "detail"} <= set(body)
    assert body["status"] == status
    assert "Traceback" not in json.dumps(body)
    return body


TODO = json.loads((Path(__file__).parents[2] / "examples/needs/todo.json").read_text())


def test_health_checks_need_no_token(api: Api) -> None:
    assert api.client.get("/healthz").get_json() == {"status": "ok"}
    ready = api.client.get("/readyz").get_json()
    assert ready["status"] == "ok" and ready["checks"]["store"] is True
    assert ready["plugins_active"] == 2
    assert ready["registry_age_s"] >= 0
    # a switch bumps the state version, and the worker's registry follows it
    before = ready["state_version"]
    assert api.post(f"/api/v1/plugins/{api.plugins['open']}/disable", "admin").status_code == 200
    after = api.client.get("/readyz").get_json()
    assert after["state_version"] == before + 1 and after["plugins_active"] == 1


def test_readyz_lists_code_running_pth_without_their_directories(api: Api) -> None:
    from dihya.gate.startup import scan_pth

    ready = api.client.get("/readyz").get_json()
    expected = scan_pth()  # this interpreter's: in a venv, setuptools' own at least
    assert [p["file"] for p in ready["pth"]] == [p.file for p in expected]
    assert ready["pth_unacknowledged"] == sum(not p.acknowledged for p in expected)
    for item in ready["pth"]:
        assert set(item) == {"file", "owner", "sha256", "acknowledged", "acknowledged_by"}
        assert "/" not in json.dumps(item), "/readyz answers anyone: no paths"


@pytest.mark.parametrize("header", [None, "Bearer", "Basic abc", "Bearer dihya_0000000000000000_"
                                    + "x" * 43, "Bearer nonsense"])
def test_every_api_route_needs_a_valid_token(api: Api, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    for method, url in (("get", "/api/v1/plugins"), ("post", "/api/v1/generate"),
                        ("post", f"/api/v1/plugins/{api.plugins['open']}/disable")):
        response = getattr(api.client, method)(url, headers=headers)
        body = problem(response, 401)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "dihya_" not in json.dumps(body)


def test_an_expired_token_is_a_401_saying_so(api: Api) -> None:
    import time

    from dihya.store.tokens import rotate_token

    store = api.app.extensions["dihya"].store
    soon = create_token(store, "short-lived", "admin", expires_at=time.time() - 0.001)
    body = problem(api.client.get("/api/v1/plugins",
                                  headers={"Authorization": f"Bearer {soon}"}), 401)
    assert "has expired" in body["detail"] and "tokens rotate" in body["detail"]
    assert soon not in json.dumps(body)
    renewed, _info = rotate_token(store, "short-lived", None, keep_expiry=False)
    assert api.client.get("/api/v1/plugins", headers={
        "Authorization": f"Bearer {renewed}"}).status_code == 200
    problem(api.client.get("/api/v1/plugins", headers={"Authorization": f"Bearer {soon}"}), 401)


def test_roles(api: Api) -> None:
    assert api.get("/api/v1/plugins", "viewer").status_code == 200
    problem(api.post("/api/v1/generate", "viewer", json={"needs": TODO}), 403)
    problem(api.post(f"/api/v1/plugins/{api.plugins['open']}/disable", "developer"), 403)
    assert api.post("/api/v1/generate", "developer", json={"needs": TODO}).status_code == 200


def test_listing_matches_the_cli_fields(api: Api) -> None:
    rows = {r["name"]: r for r in api.get("/api/v1/plugins").get_json()}
    row = rows[api.plugins["open"]]
    assert {"name", "distribution", "version", "status", "reason", "mode", "fingerprint",
            "hooks"} <= set(row)
    assert row["actions"][0]["name"] == "echo"
    one = api.get(f"/api/v1/plugins/{api.plugins['open']}").get_json()
    assert one == row
    problem(api.get("/api/v1/plugins/nope"), 404)


def test_generate_returns_files_and_report(api: Api) -> None:
    response = api.post("/api/v1/generate", json={"needs": TODO})
    body = response.get_json()
    assert response.status_code == 200
    assert body["files"]["EXTRA.txt"] == "hello\n"
    assert "app/__init__.py" in body["files"]
    statuses = {(p["name"], p["status"]) for p in body["report"]["plugins"]}
    # the developer may not run the admins-only plugin: reported, not silently dropped
    assert statuses == {(api.plugins["open"], "ok"), (api.plugins["admins"], "skipped")}
    skipped = [p for p in body["report"]["plugins"] if p["status"] == "skipped"]
    assert skipped[0]["detail"] == "acl"
    as_admin = api.post("/api/v1/generate", "admin", json={"needs": TODO}).get_json()
    assert {p["status"] for p in as_admin["report"]["plugins"]} == {"ok"}


def test_bad_requests(api: Api) -> None:
    bad_json = api.post("/api/v1/generate", data="{nope", content_type="application/json")
    assert "line 1" in problem(bad_json, 400)["detail"]
    problem(api.post("/api/v1/generate", data="needs=x", content_type="text/plain"), 415)
    big = json.dumps({"needs": {"x-pad": "x" * (1024 * 1024)}})
    problem(api.post("/api/v1/generate", data=big, content_type="application/json"), 413)
    missing = problem(api.post("/api/v1/generate", json={"need": {}}), 422)
    pointers = {e["pointer"] for e in missing["errors"]}
    assert pointers == {""} or pointers == {""}
    invalid = dict(TODO, project="Not A Slug", stack="rails")
    invalid["entities"] = [dict(TODO["entities"][0], name="9x")]
    body = problem(api.post("/api/v1/generate", json={"needs": invalid}), 422)
    assert {e["pointer"] for e in body["errors"]} == {"/needs/project", "/needs/stack",
                                                      "/needs/entities/0/name"}
    assert "Not A Slug" not in json.dumps(body), "the response echoes the client's data"
    problem(api.client.delete("/api/v1/plugins", headers=api.headers("admin")), 405)
    problem(api.client.get("/no/such/route"), 404)


def test_deep_nesting_is_a_400_with_the_limit(api: Api) -> None:
    # 200,000 `[`: too deep for the parser itself (was a 500 RecursionError)
    deep = problem(api.post("/api/v1/generate", data="[" * 200_000,
                            content_type="application/json"), 400)
    assert "64" in deep["detail"]
    # parseable, but deeper than the limit: refused before any validation recurses
    nested: Any = "x"
    for _ in range(65):
        nested = [nested]
    assert "64" in problem(api.post("/api/v1/generate", json={"needs": nested}), 400)["detail"]
    for _ in range(40):  # within the limit: an ordinary 422
        nested = nested[0]
    problem(api.post("/api/v1/generate", json={"needs": nested}), 422)


def test_a_flood_of_invalid_entities_gets_a_bounded_422(api: Api) -> None:
    """100,000 invalid entities in a 200 KB body: the first 50 problems and one saying
    more were found, not millions of bytes (was 7.4 MB, computed in 8.7 s)."""
    needs = dict(TODO, entities=[1] * 100_000)
    body = json.dumps({"needs": needs}, separators=(",", ":"))
    answer = api.post("/api/v1/generate", data=body, content_type="application/json")
    detail = problem(answer, 422)
    assert len(detail["errors"]) == 51
    assert detail["errors"][-1]["detail"].startswith("more problems were found")
    assert detail["detail"].startswith("More than 50 problems")
    assert len(answer.get_data()) < 20_000


def test_admin_disable_takes_effect_and_enable_restores(api: Api) -> None:
    name = api.plugins["open"]
    response = api.post(f"/api/v1/plugins/{name}/disable", "admin", json={"reason": "CVE-1"})
    assert response.status_code == 200
    row = response.get_json()
    assert (row["status"], row["reason"]) == ("disabled", "disabled-by-admin")
    assert "CVE-1" in row["message"]
    generated = api.post("/api/v1/generate", json={"needs": TODO}).get_json()
    assert "EXTRA.txt" not in generated["files"]
    problem(api.post(f"/api/v1/plugins/{name}/actions/echo", json={"text": "x"}), 409)
    assert api.post(f"/api/v1/plugins/{name}/enable", "admin").get_json()["status"] == "active"
    generated = api.post("/api/v1/generate", json={"needs": TODO}).get_json()
    assert "EXTRA.txt" in generated["files"]
    problem(api.post("/api/v1/plugins/nope/disable", "admin"), 404)
    problem(api.post(f"/api/v1/plugins/{name}/disable", "admin", json={"reason": 3}), 422)


def test_switch_seen_by_another_app_on_the_same_store(api: Api) -> None:
    other = create_app(api.app.extensions["dihya"].config_path)
    other.extensions["dihya"].version_ttl_s = 0.0
    name = api.plugins["open"]
    api.post(f"/api/v1/plugins/{name}/disable", "admin")
    token = api.tokens["viewer"]
    row = other.test_client().get(f"/api/v1/plugins/{name}",
                                  headers={"Authorization": f"Bearer {token}"}).get_json()
    assert row["reason"] == "disabled-by-admin"


def test_actions(api: Api, tmp_path: Path) -> None:
    url = f"/api/v1/plugins/{api.plugins['open']}/actions/echo"
    calls = tmp_path / "calls.txt"
    response = api.post(url, json={"text": "hi"})
    assert (response.status_code, response.get_json()) == (200, {"text": "HI"})
    body = problem(api.post(url, json={"text": "x" * 21, "extra": 1}), 422)
    assert {e["pointer"] for e in body["errors"]} == {"", "/text"}
    assert calls.read_text().count("call") == 1, "the plugin saw an invalid body"
    failed = problem(api.post(url, json={"text": "boom"}), 502)
    assert "secret detail" not in json.dumps(failed)
    problem(api.post(url, json={"text": "bad"}), 502)
    problem(api.post(f"/api/v1/plugins/{api.plugins['open']}/actions/nope", json={}), 404)
    problem(api.post(url, "viewer", json={"text": "hi"}), 403)


def test_plugin_acl_applies_to_actions(plugin_site, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIHYA_TEST_CALLS", str(tmp_path / "calls.txt"))
    name = plugin_site.unique("acl")
    plugin_site.install(name, source=plugin_source(name, body=ACTION_PLUGIN))
    config = write_config(tmp_path / "dihya.toml", [plugin_site.entry(name, roles=("admin",))])
    api = Api(create_app(config), {"acl": name})
    url = f"/api/v1/plugins/{name}/actions/echo"
    problem(api.post(url, "developer", json={"text": "hi"}), 403)
    assert api.post(url, "admin", json={"text": "hi"}).status_code == 200


def test_rate_limit_per_token(plugin_site, tmp_path: Path) -> None:
    config = write_config(tmp_path / "dihya.toml", [], '[web]\nrate_limit = "2/minute"\n')
    api = Api(create_app(config), {})
    for _ in range(2):
        assert api.post("/api/v1/generate", json={"needs": TODO}).status_code == 200
    limited = api.post("/api/v1/generate", json={"needs": TODO})
    problem(limited, 429)
    assert 0 < int(limited.headers["Retry-After"]) <= 60
    # another token has its own budget
    assert api.post("/api/v1/generate", "admin", json={"needs": TODO}).status_code == 200


def test_audit_lines_pseudonymise_and_never_carry_data(api: Api,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    needs = dict(TODO, description="Contact Jane Doe <jane.doe@example.org>")
    with caplog.at_level(logging.INFO, logger="dihya.audit"):
        api.post("/api/v1/generate", json={"needs": needs})
        api.client.get("/api/v1/plugins", headers={"Authorization": "Bearer wrong"})
        api.post(f"/api/v1/plugins/{api.plugins['open']}/disable", "developer")
    events = [json.loads(r.getMessage()) for r in caplog.records if r.name == "dihya.audit"]
    types = [(e["type"], e["outcome"]) for e in events]
    assert types == [("generation", "ok"), ("auth.failed", "denied"), ("acl.denied", "denied")]
    text = caplog.text
    for secret in ("Jane", "jane.doe", "developer-user", api.tokens["developer"], "wrong",
                   "127.0.0.1"):
        assert secret not in text
    generation = events[0]
    assert generation["actor"].startswith("p-") and generation["files"] > 5
    assert len(generation["needs_sha256"]) == 64


def test_audit_and_report_hash_non_ascii_needs_alike(api: Api,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """One canonical JSON: an auditor matches a report with its audit event by the hash of
    the needs and of the code, whatever the script of the text (they used to differ for
    non-ASCII needs: the API hashed an ASCII-escaped text, the pipeline UTF-8)."""
    from dihya.canonical import canonical_sha256

    needs = dict(TODO, description="Gestion des tâches — été, 東京, ☕")
    with caplog.at_level(logging.INFO, logger="dihya.audit"):
        answer = api.post("/api/v1/generate", json={"needs": needs})
    assert answer.status_code == 200
    body = answer.get_json()
    [event] = [json.loads(r.getMessage()) for r in caplog.records
               if r.name == "dihya.audit" and '"generation"' in r.getMessage()]
    assert event["needs_sha256"] == body["report"]["needs_sha256"] == canonical_sha256(needs)
    assert event["code_sha256"] == canonical_sha256(body["files"])


def test_internal_errors_are_problems_without_traces(api: Api) -> None:
    def explode() -> None:
        raise RuntimeError("secret internal state")

    api.app.add_url_rule("/boom", "boom", explode)
    body = problem(api.client.get("/boom"), 500)
    assert "secret internal state" not in json.dumps(body) and body["request_id"]


def test_repeated_failures_quarantine_a_plugin(plugin_site, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    name = plugin_site.unique("flaky")
    body = "\ndef after_generation(self, code, needs):\n    raise RuntimeError('down')\n"
    plugin_site.install(name, source=plugin_source(name, body=body))
    config = write_config(tmp_path / "dihya.toml", [plugin_site.entry(name)],
                          '[web]\nrate_limit = "1000/minute"\n[sandbox]\nquarantine_after = 3\n')
    api = Api(create_app(config), {"flaky": name})
    with caplog.at_level(logging.INFO, logger="dihya.audit"):
        for _ in range(3):
            report = api.post("/api/v1/generate", json={"needs": TODO}).get_json()["report"]
            assert [p["status"] for p in report["plugins"]] == ["failed"]
    row = api.get(f"/api/v1/plugins/{name}").get_json()
    assert (row["status"], row["reason"]) == ("disabled", "quarantined")
    report = api.post("/api/v1/generate", json={"needs": TODO}).get_json()["report"]
    assert report["plugins"] == [{"name": name, "hook": "*", "status": "skipped", "ms": 0.0,
                                  "detail": "disabled/quarantined"}]
    events = [json.loads(r.getMessage()) for r in caplog.records if r.name == "dihya.audit"]
    assert [e["type"] for e in events].count("hook.failed") == 3
    assert any(e["type"] == "plugin.quarantined" and e["plugin"] == name for e in events)
    enabled = api.post(f"/api/v1/plugins/{name}/enable", "admin").get_json()
    assert enabled["status"] == "active"


def test_config_edits_reach_a_running_app(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    state = api.app.extensions["dihya"]
    state.version_ttl_s = 0.0
    name = api.plugins["open"]
    path = state.config_path
    original = path.read_text()
    import time

    time.sleep(0.01)  # a distinct mtime
    path.write_text(original.replace(f'name = "{name}"', f'name = "{name}"\nenabled = false'))
    row = api.get(f"/api/v1/plugins/{name}").get_json()
    assert (row["status"], row["reason"]) == ("disabled", "disabled-by-config")
    path.write_text("[plugins\n")  # a broken edit: the previous config keeps serving
    with caplog.at_level(logging.INFO, logger="dihya.audit"):
        row = api.get(f"/api/v1/plugins/{name}").get_json()
    assert row["reason"] == "disabled-by-config"
    events = [json.loads(r.getMessage()) for r in caplog.records if r.name == "dihya.audit"]
    assert {"type": "registry.reloaded", "outcome": "failed", "reason": "invalid-config"} in [
        {k: e.get(k) for k in ("type", "outcome", "reason")} for e in events]
    path.write_text(original)
    assert api.get(f"/api/v1/plugins/{name}").get_json()["status"] == "active"


def test_a_plugin_whose_name_holds_a_slash_can_be_killed_over_http(
        plugin_site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Entry-point names may hold `/`; such a plugin must still be reachable by every
    per-plugin route, above all disable (the kill switch), written raw or as %2F."""
    from support.wheels import build_wheel, pip_install

    monkeypatch.delenv("DIHYA_PLUGINS_DISABLE", raising=False)
    stem = plugin_site.unique("slash")
    name, module = f"acme/{stem}", f"dihya_plugin_{stem}"
    source = plugin_source(name, body=ACTION_PLUGIN.replace(
        'open(os.environ["DIHYA_TEST_CALLS"], "a")', 'open(os.devnull, "a")'))
    wheel = build_wheel(plugin_site.wheels, f"dihya-plugin-{stem}", "1.0.0",
                        {f"{module}/__init__.py": source}, {name: f"{module}:Plugin"})
    pip_install(sys.executable, str(wheel), target=plugin_site.site)
    config = write_config(tmp_path / "dihya.toml", [plugin_site.entry(name)],
                          '[web]\nrate_limit = "1000/minute"\n[audit]\nkey = "test-key"\n')
    api = Api(create_app(config), {"slash": name})

    assert api.get(f"/api/v1/plugins/{name}").get_json()["status"] == "active"
    assert api.get(f"/api/v1/plugins/acme%2F{stem}").get_json()["name"] == name
    row = api.post(f"/api/v1/plugins/{name}/disable", "admin", json={"reason": "CVE-2"})
    assert row.status_code == 200, row.get_data(as_text=True)
    assert (row.get_json()["name"], row.get_json()["reason"]) == (name, "disabled-by-admin")
    generated = api.post("/api/v1/generate", json={"needs": TODO}).get_json()
    assert "EXTRA.txt" not in generated["files"]  # switched off: its hook did not run
    problem(api.post(f"/api/v1/plugins/{name}/actions/echo", json={"text": "x"}), 409)
    assert api.post(f"/api/v1/plugins/acme%2F{stem}/enable", "admin").get_json()["status"] \
        == "active"
    answer = api.post(f"/api/v1/plugins/{name}/actions/echo", json={"text": "hi"})
    assert (answer.status_code, answer.get_json()) == (200, {"text": "HI"})
    assert api.get(f"/api/v1/plugins/{name}/logs", "admin").status_code == 200
    # a sub-route's URL offers the sub-route's methods only (not the plugin page's GET)
    for url, allowed in [(f"/api/v1/plugins/{name}/disable", {"POST", "OPTIONS"}),
                         (f"/api/v1/plugins/{name}/actions/echo", {"POST", "OPTIONS"}),
                         (f"/api/v1/plugins/{name}", {"GET", "HEAD", "OPTIONS"})]:
        answer = api.client.options(url, headers=api.headers("admin"))
        assert set(answer.headers["Allow"].split(", ")) == allowed, (url, answer.headers)
    # a bare `reload` is still the reload route, and a prefix of the name is not the plugin
    problem(api.get("/api/v1/plugins/acme"), 404)
    assert api.post("/api/v1/plugins/reload", "admin").status_code == 200
