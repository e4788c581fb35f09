"""The OpenAPI document: valid OpenAPI 3.1, exactly the app's routes, served, and true."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

import dihya
from dihya.config import MODES, ROLES
from dihya.gate.decide import STATUSES
from dihya.needs import needs_schema
from dihya.pipeline import HookResult
from dihya.registry import PluginRecord
from dihya.web import create_app
from dihya.web.auth import ROLE_RANK
from dihya.web.openapi import openapi_document

AUTOMATIC = {"HEAD", "OPTIONS"}  # Flask answers these on every GET route by itself


@pytest.fixture
def app(tmp_path: Path) -> Any:
    config = tmp_path / "dihya.toml"
    config.write_text('[plugins]\nhook_timeout_s = 2.0\n', "utf-8")
    return create_app(config)


@pytest.fixture
def tokens(app: Any) -> dict[str, str]:
    from dihya.store.tokens import create_token

    store = app.extensions["dihya"].store
    return {role: create_token(store, f"test-{role}", role) for role in ROLES}


@pytest.fixture
def doc() -> dict[str, Any]:
    return openapi_document()


def _template(rule: str) -> str:
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def _shape(path: str) -> str:
    return re.sub(r"\{[^{}]+\}", "{}", path)


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method != "parameters":
                yield path, method.upper(), op


def test_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    validate(doc)
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["version"] == dihya.__version__


def test_every_route_is_documented_and_nothing_else(app: Any, doc: dict[str, Any]) -> None:
    served: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        # the operator console's HTML pages are no part of the API (tests/web/test_console.py
        # checks their protection)
        if rule.endpoint == "static" or rule.endpoint.startswith("console."):
            continue
        for converter in rule._converters.values():
            assert type(converter).__name__ in (
                "UnicodeConverter", "PluginNameConverter", "PluginPageConverter"), rule.rule
        path = _shape(_template(rule.rule))
        served.setdefault(path, set()).update(set(rule.methods or ()) - AUTOMATIC)
    documented: dict[str, set[str]] = {}
    for path, method, _op in operations(doc):
        documented.setdefault(_shape(path), set()).add(method)
    assert documented == served


def test_path_parameters_are_declared(doc: dict[str, Any]) -> None:
    for path, item in doc["paths"].items():
        declared = {p["name"] for p in item.get("parameters", []) if p["in"] == "path"}
        assert declared == set(re.findall(r"\{([^{}]+)\}", path)), path


def test_served_at_openapi_json(app: Any, doc: dict[str, Any]) -> None:
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == doc


def test_security_everywhere_but_the_public_routes(doc: dict[str, Any]) -> None:
    assert doc["security"] == [{"bearerAuth": []}]
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    public = {p for p, _m, op in operations(doc) if op.get("security") == []}
    assert public == {"/healthz", "/readyz", "/openapi.json"}
    for path, _method, op in operations(doc):
        if path not in public:
            assert op["x-required-role"] in ROLE_RANK, path
            assert "401" in op["responses"], path


def test_error_responses_are_problems(doc: dict[str, Any]) -> None:
    components = doc["components"]
    for path, _method, op in operations(doc):
        for status, response in op["responses"].items():
            if int(status) >= 400 and status != "503":
                name = response["$ref"].rsplit("/", 1)[1]
                content = components["responses"][name]["content"]
                assert content == {"application/problem+json": {
                    "schema": {"$ref": "#/components/schemas/Problem"}}}, (path, status)
    responses = components["responses"]
    assert "WWW-Authenticate" in responses["Unauthorized"]["headers"]
    assert "Retry-After" in responses["TooManyRequests"]["headers"]
    assert "Allow" in responses["MethodNotAllowed"]["headers"]
    problem = components["schemas"]["Problem"]["properties"]
    assert {"type", "title", "status", "detail", "request_id", "errors"} <= problem.keys()
    assert problem["errors"]["items"]["required"] == ["pointer", "detail"]


def test_needs_schema_is_the_real_one(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    real = needs_schema()
    assert schemas["Needs"]["properties"].keys() == real["properties"].keys()
    assert schemas["Needs"]["required"] == real["required"]
    text = repr(doc)
    assert "#/$defs/" not in text
    for ref in re.findall(r"'\$ref': '#/components/schemas/([^']+)'", text):
        assert ref in schemas, ref
    assert len(real["$defs"]) == sum(name.startswith("Needs") and name != "Needs"
                                     for name in schemas)


def test_needs_component_accepts_and_rejects_like_the_real_schema(doc: dict[str, Any]) -> None:
    import jsonschema
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012

    registry = Registry().with_resource("urn:doc", DRAFT202012.create_resource(doc))
    validator = jsonschema.Draft202012Validator(
        {"$ref": "urn:doc#/components/schemas/Needs"}, registry=registry)
    real = jsonschema.Draft202012Validator(needs_schema())
    samples: list[Any] = [
        {"project": "shop", "stack": "flask-api",
         "entities": [{"name": "Item", "fields": [{"name": "label", "type": "string"}]}]},
        {"project": "shop", "stack": "flask-api",
         "entities": [{"name": "1tem", "fields": [{"name": "label", "type": "nope"}]}]},
        {"project": "Shop", "stack": "flask-api", "entities": []},
        {"project": "shop", "stack": "flask-api", "x-extra": 1,
         "entities": [{"name": "A", "fields": [{"name": "b", "type": "text", "default": None}]}]},
    ]
    for sample in samples:
        assert validator.is_valid(sample) == real.is_valid(sample), sample


def test_the_needs_example_generates(app: Any, doc: dict[str, Any],
                                     tokens: dict[str, str]) -> None:
    op = doc["paths"]["/api/v1/generate"]["post"]
    body = op["requestBody"]["content"]["application/json"]["example"]
    response = app.test_client().post("/api/v1/generate", json=body, headers={
        "Authorization": f"Bearer {tokens['developer']}"})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["report"]["file_count"] > 0


def test_plugin_schema_covers_every_key(doc: dict[str, Any]) -> None:
    record = PluginRecord(name="x", distribution="d", version="1", value="m:C",
                          status="refused", reason="not-allowlisted", message="m", mode=None,
                          fingerprint=None, approved_fingerprint=None)
    schema = doc["components"]["schemas"]["Plugin"]
    assert set(schema["properties"]) == set(record.to_json()) == set(schema["required"])
    assert schema["properties"]["status"]["enum"] == list(STATUSES)
    assert schema["properties"]["mode"]["enum"] == [*MODES, None]
    assert set(schema["properties"]["reason"]["enum"]) == (
        {r for rs in STATUSES.values() for r in rs} | {None})


def test_generate_response_covers_the_report(doc: dict[str, Any]) -> None:
    from dihya.pipeline import GenerationResult

    hook = HookResult("example", "after_generation", "ok", 1.0, "detail")
    result = GenerationResult({"a.py": ""}, (hook,), "0" * 64, 2.0)
    schemas = doc["components"]["schemas"]
    assert set(schemas["GenerationReport"]["properties"]) == set(result.report())
    assert set(schemas["HookResult"]["properties"]) == set(hook.to_json())


def _call(client: Any, path: str, method: str, token: str | None) -> Any:
    concrete = path.replace("{name}", "no-such-plugin").replace("{action}", "no-such-action")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.open(concrete, method=method, headers=headers, json={})


def test_required_roles_match_the_app(app: Any, doc: dict[str, Any],
                                      tokens: dict[str, str]) -> None:
    client = app.test_client()
    by_rank = sorted(ROLES, key=ROLE_RANK.__getitem__)
    for path, method, op in operations(doc):
        if op.get("security") == []:
            assert _call(client, path, method, None).status_code < 400, path
            continue
        need = op["x-required-role"]  # read from the view's @require
        assert _call(client, path, method, None).status_code == 401, path
        for role in by_rank:
            status = _call(client, path, method, tokens[role]).status_code
            if ROLE_RANK[role] < ROLE_RANK[need]:
                assert status == 403, (path, role)
            else:
                assert status not in (401, 403), (path, role, status)
                assert str(status) in op["responses"], (path, role, status)
        assert ("403" in op["responses"]) == (ROLE_RANK[need] > 0), path


# ---------------------------------------------------------------- responses as documented


def _resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def assert_documented(doc: dict[str, Any], path: str, method: str, response: Any) -> None:
    """`response` has a documented status, media type, required headers and body."""
    import jsonschema
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012

    if method == "*":
        documented = doc["components"]["responses"]["MethodNotAllowed"]
        assert response.status_code == 405
    else:
        responses = doc["paths"][path][method.lower()]["responses"]
        assert str(response.status_code) in responses, (path, method, response.status_code)
        documented = _resolve(doc, responses[str(response.status_code)])
    assert response.mimetype in documented["content"], (path, response.mimetype)
    for name, header in documented.get("headers", {}).items():
        if _resolve(doc, header).get("required"):
            assert name in response.headers, (path, response.status_code, name)
    schema = documented["content"][response.mimetype]["schema"]
    registry = Registry().with_resource("urn:doc", DRAFT202012.create_resource(doc))
    jsonschema.Draft202012Validator(_absolute(schema), registry=registry).validate(
        response.get_json())


def _absolute(node: Any) -> Any:
    """`node` with its in-document refs pointing at `urn:doc` (the registered document)."""
    if isinstance(node, dict):
        return {k: "urn:doc" + v if k == "$ref" and v.startswith("#") else _absolute(v)
                for k, v in node.items()}
    return [_absolute(v) for v in node] if isinstance(node, list) else node


@pytest.fixture
def limited(tmp_path: Path) -> Any:
    config = tmp_path / "limited" / "dihya.toml"
    config.parent.mkdir()
    config.write_text('[web]\nrate_limit = "2/minute"\n', "utf-8")
    return create_app(config)


def test_error_responses_are_as_documented(app: Any, doc: dict[str, Any],
                                          tokens: dict[str, str]) -> None:
    from dihya.needs import MAX_NEEDS_BYTES

    client = app.test_client()
    dev = {"Authorization": f"Bearer {tokens['developer']}"}
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    gen = "/api/v1/generate"
    cases = [
        (gen, "POST", client.post(gen)),  # 401
        (gen, "POST", client.post(gen, json={}, headers={"Authorization": "Bearer nope"})),
        (gen, "POST", client.post(gen, json={}, headers={
            "Authorization": f"Bearer {tokens['viewer']}"})),  # 403
        (gen, "POST", client.post(gen, data="{", headers=dev,
                                  content_type="application/json")),  # 400
        (gen, "POST", client.post(gen, data="x", headers=dev, content_type="text/plain")),
        (gen, "POST", client.post(gen, json={"needs": {"project": "A"}}, headers=dev)),  # 422
        (gen, "POST", client.post(gen, data=b" " * (MAX_NEEDS_BYTES + 1), headers=dev,
                                  content_type="application/json")),  # 413
        ("/api/v1/plugins/{name}", "GET", client.get("/api/v1/plugins/nope", headers=dev)),
        ("/api/v1/plugins/{name}/disable", "POST",
         client.post("/api/v1/plugins/nope/disable", headers=admin)),  # 404
        ("/api/v1/plugins", "GET", client.get("/api/v1/plugins", headers=dev)),  # 200
        ("/readyz", "GET", client.get("/readyz")),
        ("/healthz", "GET", client.get("/healthz")),
        ("*", "*", client.delete("/api/v1/plugins", headers=dev)),  # 405
    ]
    statuses = set()
    for path, method, response in cases:
        assert_documented(doc, path, method, response)
        statuses.add(response.status_code)
    assert statuses == {200, 400, 401, 403, 404, 405, 413, 415, 422}
    assert client.delete("/api/v1/plugins").headers["Allow"]


def test_rate_limit_answer_is_as_documented(limited: Any, doc: dict[str, Any]) -> None:
    from dihya.store.tokens import create_token

    token = create_token(limited.extensions["dihya"].store, "busy", "developer")
    client = limited.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    answers = [client.post("/api/v1/generate", json={}, headers=headers) for _ in range(3)]
    assert [r.status_code for r in answers] == [422, 422, 429]
    assert_documented(doc, "/api/v1/generate", "POST", answers[-1])
    assert int(answers[-1].headers["Retry-After"]) >= 1


def test_internal_error_is_as_documented(app: Any, doc: dict[str, Any],
                                         tokens: dict[str, str]) -> None:
    def broken(*_args: Any) -> None:
        raise RuntimeError("boom")

    app.extensions["dihya"].current = broken
    response = app.test_client().get("/api/v1/plugins", headers={
        "Authorization": f"Bearer {tokens['viewer']}"})
    assert response.status_code == 500
    assert_documented(doc, "/api/v1/plugins", "GET", response)
    assert "boom" not in response.get_data(as_text=True)


def test_plugin_logs_and_per_plugin_audit_answers_are_as_documented(
        app: Any, doc: dict[str, Any], tokens: dict[str, str]) -> None:
    from dihya.pluginlog import PluginLogRecord
    from dihya.store.pluginlogs import write

    write(app.extensions["dihya"].store, [PluginLogRecord(
        1.0, "p", "1.0", "r", "INFO", "for %s (%d)", ["[needs]", 3], "ValueError", 12)])
    client = app.test_client()
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    logs = "/api/v1/plugins/{name}/logs"
    cases = [
        (logs, "GET", client.get("/api/v1/plugins/p/logs", headers=admin)),  # 200
        (logs, "GET", client.get("/api/v1/plugins/p/logs?level=LOUD", headers=admin)),  # 422
        (logs, "GET", client.get("/api/v1/plugins/p/logs", headers={
            "Authorization": f"Bearer {tokens['viewer']}"})),  # 403
        ("/api/v1/audit/export", "GET",
         client.get("/api/v1/audit/export?plugin=p", headers=admin)),
        ("/api/v1/audit/export", "GET",
         client.get("/api/v1/audit/export?plugin=p&format=csv", headers=admin)),
        ("/api/v1/audit/purge", "POST",
         client.post("/api/v1/audit/purge", json={"plugin": "p"}, headers=admin)),
        # every event, each with `at_iso` beside `at` (the purge just audited is one)
        ("/api/v1/audit/export", "GET", client.get("/api/v1/audit/export", headers=admin)),
    ]
    for path, method, response in cases:
        assert_documented(doc, path, method, response)
    assert [r.status_code for _p, _m, r in cases] == [200, 422, 403, 200, 422, 200, 200]
    assert all("at_iso" in event for event in cases[-1][2].get_json())
    assert cases[0][2].get_json()[0]["message"] == "for [needs] (3) [ValueError]"
    assert cases[-2][2].get_json()["logs"] == 1
    assert doc["paths"]["/api/v1/plugins/{name}/logs"]["get"]["x-required-role"] == "admin"
