"""Sandbox abuses that every call survives are counted toward quarantine (HTTP backend).

Two hostile plugins whose calls all answer `ok`, with real sandbox workers: one whose
worker exits after every answer (the backend pays a worker start per call), one that leaves
a thread burning CPU after answering. Each abuse is audited (`hook.sandbox-violation`,
reason `exited-between-calls` / `busy-while-idle`) and counts as a failed call, so the plugin
is quarantined after `[sandbox] quarantine_after` of them in a row; a well-behaved plugin
beside them never is. No fixed sleep: each step polls for what it waits for.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from test_api import TODO, Api, write_config

from dihya.store import failures
from dihya.web import create_app
from support.polling import wait_for
from support.wheels import plugin_source

# The worker exits right after its answer, when it goes back to read the next request (a
# thread or a timer calling `os._exit` would race with the answer on a loaded machine).
# With needs whose description is "behave" it does not.
EXIT_BODY = '''
def after_generation(self, code, needs):
    if needs.get("description") != "behave":
        import os, sys
        sys.modules["dihya.sandbox.worker"].read_frame = lambda *a, **k: os._exit(0)
    code["exit.txt"] = "served"
    return code
'''
# A thread that spins after the answer until it has used 20 s of CPU (far above the 0.5 s
# allowed while idle; bounded, so a failing test does not leave a core burning for long).
BURN_BODY = '''
def after_generation(self, code, needs):
    import threading, time

    def spin():
        while time.thread_time() < 20.0:
            pass

    threading.Thread(target=spin, daemon=True).start()
    code["burn.txt"] = "served"
    return code
'''
WITNESS_BODY = '''
def after_generation(self, code, needs):
    code["witness.txt"] = "still here"
    return code
'''


def abuse_api(plugin_site: Any, tmp_path: Path, bodies: dict[str, str],
              sandbox: str = "quarantine_after = 3\n") -> Api:
    names = {key: plugin_site.unique(key) for key in bodies}
    for key, name in names.items():
        plugin_site.install(name, source=plugin_source(name, body=bodies[key]))
    config = write_config(tmp_path / "dihya.toml",
                          [plugin_site.entry(n, mode="sandbox") for n in names.values()],
                          f'[web]\nrate_limit = "1000/minute"\n[sandbox]\n{sandbox}')
    # a deadline no loaded machine misses: a timeout would count as a failure too
    config.write_text(config.read_text().replace("hook_timeout_s = 2.0", "hook_timeout_s = 30.0"))
    return Api(create_app(config), names)


def generate(api: Api, description: str = "abuse") -> dict[str, str]:
    answer = api.post("/api/v1/generate", json={"needs": dict(TODO, description=description)})
    assert answer.status_code == 200, answer.get_json()
    return {p["name"]: p["status"] for p in answer.get_json()["report"]["plugins"]}


def row(api: Api, name: str) -> tuple[str, str | None]:
    body = api.get(f"/api/v1/plugins/{name}").get_json()
    return body["status"], body["reason"]


def audit(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "dihya.audit"]


def violations(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [e.get("reason") for e in audit(caplog)
            if e["type"] == "hook.sandbox-violation" and e.get("plugin") == name]


def count(api: Api, name: str) -> int:
    return failures.counts(api.app.extensions["dihya"].store).get(name, 0)


@pytest.fixture
def closing_apis() -> Any:
    apis: list[Api] = []
    yield apis.append
    for api in apis:
        api.app.extensions["dihya"].close()


def test_a_worker_that_exits_after_every_answer_is_quarantined(
        plugin_site: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        closing_apis: Any) -> None:
    api = abuse_api(plugin_site, tmp_path, {"exit": EXIT_BODY, "witness": WITNESS_BODY})
    closing_apis(api)
    exiter, witness = api.plugins["exit"], api.plugins["witness"]
    pool = api.app.extensions["dihya"].pool
    with caplog.at_level(logging.INFO, logger="dihya.audit"):
        # the first call starts a worker (nothing to charge), the next three each find it
        # gone and start another: three abuses, the third reaches quarantine_after = 3
        for abuses in range(4):
            assert generate(api) == {exiter: "ok", witness: "ok"}  # every call answered
            assert count(api, exiter) == (abuses if abuses < 3 else 0)
            assert row(api, exiter) == (("active", None) if abuses < 3
                                         else ("disabled", "quarantined"))
            if abuses < 3:
                wait_for(lambda: exiter not in pool.running(), "the worker exited")
        events = audit(caplog)
    assert violations(caplog, exiter) == ["exited-between-calls"] * 3
    [quarantine] = [e for e in events if e["type"] == "plugin.quarantined"]
    assert quarantine["plugin"] == exiter and quarantine["reason"] == "consecutive-failures"
    assert row(api, witness) == ("active", None) and not violations(caplog, witness)
    assert count(api, witness) == 0
    listed = {p["name"]: p for p in api.get("/api/v1/plugins").get_json()}
    assert (listed[exiter]["status"], listed[exiter]["reason"]) == ("disabled", "quarantined")
    assert generate(api) == {exiter: "skipped", witness: "ok"}


def test_a_worker_that_burns_cpu_while_idle_is_stopped_and_quarantined(
        plugin_site: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        closing_apis: Any) -> None:
    api = abuse_api(plugin_site, tmp_path, {"burn": BURN_BODY, "witness": WITNESS_BODY})
    closing_apis(api)
    burner, witness = api.plugins["burn"], api.plugins["witness"]
    pool = api.app.extensions["dihya"].pool
    with caplog.at_level(logging.INFO, logger="dihya.audit"):
        for abuses in range(4):
            assert generate(api) == {burner: "ok", witness: "ok"}
            assert count(api, burner) == (abuses if abuses < 3 else 0)
            if abuses == 3:
                break
            assert row(api, burner) == ("active", None)
            # the watch thread stops it once it used 0.5 s of CPU while idle
            wait_for(lambda n=abuses: len(violations(caplog, burner)) == n + 1,
                     "the burning worker was stopped")
            assert burner not in pool.running()
    assert row(api, burner) == ("disabled", "quarantined")
    assert violations(caplog, burner)[:3] == ["busy-while-idle"] * 3
    assert any(e["type"] == "plugin.quarantined" and e["plugin"] == burner
               for e in audit(caplog))
    assert row(api, witness) == ("active", None) and not violations(caplog, witness)
    assert burner not in pool.running()  # the quarantine's rebuild stopped the last one


def test_abuses_in_a_row_count_and_a_clean_call_or_a_reset_starts_afresh(
        plugin_site: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        closing_apis: Any) -> None:
    """As for failed calls: a call whose worker was not abused resets the count, and the
    quarantine's reset (enable) starts it afresh."""
    api = abuse_api(plugin_site, tmp_path, {"exit": EXIT_BODY})
    closing_apis(api)
    exiter = api.plugins["exit"]
    pool = api.app.extensions["dihya"].pool

    def call(description: str, expected_count: int) -> None:
        assert generate(api, description) == {exiter: "ok"}
        assert count(api, exiter) == expected_count
        if description != "behave":
            wait_for(lambda: exiter not in pool.running(), "the worker exited")

    with caplog.at_level(logging.INFO, logger="dihya.audit"):
        call("abuse", 0)   # starts the worker, which then exits
        call("abuse", 1)   # finds it gone: one abuse
        call("behave", 2)  # finds it gone too (served, then the worker stays)
        call("behave", 0)  # the same worker answered: the count is reset
        call("abuse", 0)   # exits after answering
        call("abuse", 1)
        call("abuse", 2)
        assert row(api, exiter) == ("active", None)
        call("abuse", 0)   # the third in a row: quarantined
        assert row(api, exiter) == ("disabled", "quarantined")
        enabled = api.post(f"/api/v1/plugins/{exiter}/enable", "admin").get_json()
        assert enabled["status"] == "active"
        assert count(api, exiter) == 0
        call("behave", 0)  # a fresh worker after the reset: nothing charged
        call("behave", 0)
    assert violations(caplog, exiter) == ["exited-between-calls"] * 5


BUSY_IN_CALL_BODY = '''
def after_generation(self, code, needs):
    import time
    start = time.thread_time()
    while time.thread_time() - start < 0.7:  # more than the idle limit, inside the call
        pass
    code["busy.txt"] = "worked"
    return code
'''


def test_well_behaved_plugins_recycled_reaped_or_busy_in_calls_are_never_charged(
        plugin_site: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        closing_apis: Any) -> None:
    """With `quarantine_after = 1` a single charge would quarantine: a worker recycled at
    `max_calls`, one stopped when idle, and CPU time used inside calls are not abuses."""
    api = abuse_api(plugin_site, tmp_path, {"witness": WITNESS_BODY, "busy": BUSY_IN_CALL_BODY},
                    sandbox="quarantine_after = 1\nmax_calls = 2\nidle_s = 1\n")
    closing_apis(api)
    witness, busy = api.plugins["witness"], api.plugins["busy"]
    pool = api.app.extensions["dihya"].pool
    with caplog.at_level(logging.INFO, logger="dihya.audit"):
        pids = set()
        for _ in range(5):  # recycled at max_calls = 2: three workers or more each
            assert generate(api) == {witness: "ok", busy: "ok"}
            pids.add(pool.running().get(witness))
        assert len(pids) >= 2
        # stopped when idle for 1 s (the reaper), then started again by the next call
        wait_for(lambda: not pool.running(), "the idle workers were reaped")
        assert generate(api) == {witness: "ok", busy: "ok"}
        assert generate(api) == {witness: "ok", busy: "ok"}
    assert pool.take_abuses() == {}
    assert not violations(caplog, witness) and not violations(caplog, busy)
    for name in (witness, busy):
        assert row(api, name) == ("active", None)
        assert count(api, name) == 0
