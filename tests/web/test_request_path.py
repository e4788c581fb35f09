"""What the generate view's shortcuts keep (issue #16, third round): the needs parsed and
hashed once still give the report and the audit event the canonical hash, a too deep body
is still refused, and a body Python's parser takes but JSON has not (NaN) is a 400
problem document, not a 500."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from test_api import TODO, Api, problem, write_config

from dihya.canonical import canonical_sha256
from dihya.needs import MAX_JSON_DEPTH
from dihya.web import create_app


@pytest.fixture
def api(plugin_site, tmp_path: Path) -> Api:
    config = write_config(tmp_path / "dihya.toml", [], '[web]\nrate_limit = "1000/minute"\n')
    return Api(create_app(config), {})


def _post_text(api: Api, text: str):  # type: ignore[no-untyped-def]
    return api.client.post("/api/v1/generate", data=text, content_type="application/json",
                           headers={"Authorization": f"Bearer {api.tokens['developer']}"})


def test_report_and_audit_carry_the_canonical_hash(api: Api,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    reordered = dict(reversed(list(TODO.items())))  # the same needs, keys in another order
    with caplog.at_level(logging.INFO, logger="dihya"):
        answers = [api.post("/api/v1/generate", json={"needs": n}) for n in (TODO, reordered)]
    hashes = {a.get_json()["report"]["needs_sha256"] for a in answers}
    assert hashes == {canonical_sha256(TODO)}
    events = [json.loads(r.getMessage()) for r in caplog.records if r.name == "dihya.audit"]
    assert [e["needs_sha256"] for e in events] == [canonical_sha256(TODO)] * 2
    # the audit line says it all: the pipeline's summary is not written at INFO too
    assert not [r for r in caplog.records if r.name == "dihya.pipeline"]


def test_pipeline_summary_is_debug_with_the_request_id(api: Api,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="dihya"):
        answers = [api.post("/api/v1/generate", json={"needs": TODO}) for _ in range(2)]
    lines = [r for r in caplog.records if r.name == "dihya.pipeline"]
    assert [r.levelno for r in lines] == [logging.DEBUG] * 2
    assert [r.__dict__["needs_sha256"] for r in lines] == [canonical_sha256(TODO)] * 2
    # the pipeline's line carries the request id the answer was given with
    assert [r.__dict__["request_id"] for r in lines] == [a.headers["X-Request-Id"]
                                                         for a in answers]
    audited = [json.loads(r.getMessage()) for r in caplog.records if r.name == "dihya.audit"]
    # the audit event says the same (its `code_bytes` is the size of the files' canonical
    # JSON, the summary's the length of their texts: the line stays there, at DEBUG)
    for line, event in zip(lines, audited, strict=True):
        for key in ("needs_sha256", "files", "plugins_ok", "request_id"):
            assert line.__dict__[key] == event[key], key


def test_needs_nested_too_deep_are_refused_once_parsed(api: Api) -> None:
    deep = {"needs": dict(TODO, **{"x-deep": json.loads("[" * MAX_JSON_DEPTH
                                                         + "]" * MAX_JSON_DEPTH)})}
    body = problem(_post_text(api, json.dumps(deep)), 400)
    assert "nested deeper" in body["detail"]
    fits = dict(TODO, **{"x-deep": json.loads("[" * (MAX_JSON_DEPTH - 3)
                                              + "]" * (MAX_JSON_DEPTH - 3))})
    assert api.post("/api/v1/generate", json={"needs": fits}).status_code == 200


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_json_constants_are_malformed_json(api: Api, constant: str) -> None:
    text = json.dumps({"needs": TODO}).replace('{"project"', f'{{"x-n": {constant}, "project"',
                                               1)
    body = problem(_post_text(api, text), 400)
    assert body["type"] == "urn:dihya:problem:malformed-json"
