"""Sandbox workers on real installed plugins: loading, calls, and every failure contained."""

from __future__ import annotations

import sys
import time

import pytest
from sandbox_support import hook, sandboxed, statuses

from dihya.pipeline import run_generation
from dihya.registry import build_registry
from dihya.sandbox.pool import SandboxPool
from support.wheels import pip_install, plugin_source


def test_sandboxed_plugin_runs_in_a_worker_not_here(plugin_site, needs, closing) -> None:
    snap, names = sandboxed(plugin_site, {"ok": hook(
        'import os\ncode["pid.txt"] = str(os.getpid())\nreturn code')})
    closing(snap)
    record = snap.get(names["ok"])
    assert record.status == "active", record.message
    assert record.instance is None, "a sandbox-mode plugin was imported by the backend"
    import sys

    assert f"dihya_plugin_{names['ok']}" not in sys.modules
    result = run_generation(needs, snap)
    assert statuses(result) == {names["ok"]: "ok"}
    import os

    worker_pid = int(result.files["pid.txt"])  # as seen inside its PID namespace, if any
    assert worker_pid != os.getpid()
    assert names["ok"] in snap.sandbox.running()
    again = run_generation(needs, snap)
    assert int(again.files["pid.txt"]) == worker_pid, "the worker was not kept warm"


def test_failures_are_contained_and_the_worker_replaced(plugin_site, needs, closing) -> None:
    snap, names = sandboxed(plugin_site, {
        "loop": hook("while True:\n    pass"),
        "crash": hook("import os\nos._exit(3)"),
        "segv": hook("import ctypes\nctypes.string_at(0)"),
        "garbage": hook("import os\nos.write(1, b'garbage' * 1000)\nreturn code"),
        "raises": hook("raise ValueError('nope')"),
        "badtype": hook("return {'a.txt': 42}"),
        "fine": hook('code["fine.txt"] = "ok"\nreturn code'),
    }, timeout=1.0)
    closing(snap)
    assert all(r.status == "active" for r in snap.records if r.name in names.values())
    start = time.monotonic()
    result = run_generation(needs, snap)
    assert time.monotonic() - start < 10
    got = statuses(result)
    assert got[names["loop"]] == "timeout"
    assert got[names["crash"]] == "failed" and got[names["segv"]] == "failed"
    assert got[names["garbage"]] == "ok", "a plugin's print corrupted the frame stream"
    assert got[names["raises"]] == "failed" and got[names["badtype"]] == "invalid-output"
    assert got[names["fine"]] == "ok" and result.files["fine.txt"] == "ok"
    details = {h.name: h.detail for h in result.plugins}
    assert "signal" in details[names["segv"]] or "exit" in details[names["segv"]]
    # the next generation gets fresh workers and the same outcome, quickly
    again = statuses(run_generation(needs, snap))
    assert again == got


def test_import_failures_and_slow_imports(plugin_site, closing) -> None:
    snap, names = sandboxed(plugin_site, {
        "broken": "#!full\nraise RuntimeError('at import')\n",
        "slow": "#!full\nimport time\ntime.sleep(60)\n",
        "typo": "#!full\n" + plugin_source("typo", body="\ndef befor_generation(self, needs):\n"
                                                      "    return needs\n"),
    }, start_timeout_s=15.0)  # the others' too: a loaded machine loads them in time
    closing(snap)
    got = {r.name: (r.status, r.reason) for r in snap.records}
    assert got[names["broken"]] == ("failed", "import-error"), snap.get(names["broken"]).message
    assert got[names["slow"]] == ("failed", "sandbox-start-failed")
    assert got[names["typo"]] == ("failed", "invalid-plugin")
    assert "befor_generation" in snap.get(names["typo"]).message


def test_worker_recycled_after_max_calls_and_reaped_when_idle(plugin_site, needs,
                                                              closing) -> None:
    # a value drawn when the worker imports the plugin tells one worker from the next
    # (PIDs do not: each worker may be PID 2 of its own namespace)
    snap, _names = sandboxed(plugin_site, {"pid": hook(
        'code["pid.txt"] = INSTANCE\nreturn code')}, max_calls=2)
    closing(snap)
    pids = [run_generation(needs, snap).files["pid.txt"] for _ in range(2)]
    assert pids[0] == pids[1]
    # from the third call on the old worker serves while its replacement starts
    deadline = time.monotonic() + 120
    while (latest := run_generation(needs, snap).files["pid.txt"]) == pids[0]:
        assert time.monotonic() < deadline, "the worker was never replaced"
        time.sleep(0.05)
    pids.append(latest)
    pool: SandboxPool = snap.sandbox
    assert pool.reap_idle(now=time.monotonic() + 10_000) == 1
    assert pool.running() == {}
    assert run_generation(needs, snap).files["pid.txt"] not in pids  # started again lazily


def test_a_plugin_retired_during_a_generation_is_skipped_not_failed(plugin_site, needs,
                                                                    closing) -> None:
    """A rebuild (disable, removal, upgrade) retires the plugin's worker while a generation
    on the previous snapshot is under way: its remaining hooks are `skipped`, never
    `failed` (which would be audited as a sandbox violation and count towards quarantine)."""
    from dihya.generator import generate
    from dihya.sandbox.pool import WorkerRetired

    snap, names = sandboxed(plugin_site, {"both": hook("return needs", "before_generation")
                                          + hook("return code")})
    closing(snap)
    pool: SandboxPool = snap.sandbox
    held = pool.worker(names["both"])  # a call on its way when the rebuild happens

    def generate_then_retire(current):
        pool.retain(set())  # what a rebuild without the plugin does
        return generate(current)

    result = run_generation(needs, snap, generate=generate_then_retire)
    got = {h.hook: (h.status, h.detail) for h in result.plugins}
    assert got["before_generation"] == ("ok", None)
    assert got["after_generation"][0] == "skipped", got
    assert "switched off or replaced" in got["after_generation"][1]
    deadline = time.monotonic() + 10
    while held.alive and time.monotonic() < deadline:  # drained, then stopped
        time.sleep(0.05)
    with pytest.raises(WorkerRetired):
        held.call("after_generation", ({}, needs), 2.0)


def test_a_worker_restart_never_loads_files_changed_since_the_gate(plugin_site, needs,
                                                                   closing) -> None:
    """pip upgraded (or someone edited) a sandboxed plugin and no reload ran yet: when its
    worker must start again, it refuses the changed files; the hooks are `skipped` (not
    failures that would quarantine the plugin) until a rebuild verifies them."""
    snap, names = sandboxed(plugin_site, {"edited": hook(
        'code["edited.txt"] = "original"\nreturn code')})
    closing(snap)
    name = names["edited"]
    assert run_generation(needs, snap).files["edited.txt"] == "original"
    module = plugin_site.site / f"dihya_plugin_{name}" / "__init__.py"
    module.write_text(module.read_text().replace('"original"', '"edited"'))
    snap.sandbox.worker(name).kill()  # a crash, or a recycle after max_calls
    result = run_generation(needs, snap)
    got = {h.hook: (h.status, h.detail) for h in result.plugins if h.name == name}
    assert got["after_generation"][0] == "skipped", got
    assert "changed on disk" in got["after_generation"][1]
    assert "edited.txt" not in result.files


def test_a_generation_never_runs_a_newer_version_of_a_plugin(plugin_site, closing) -> None:
    """After an upgrade the pool holds the new version's worker: a caller from the previous
    snapshot (another fingerprint) is told the plugin was replaced, never served by it."""
    from dihya.sandbox.pool import WorkerRetired

    snap, names = sandboxed(plugin_site, {"v": hook("return code")})
    closing(snap)
    pool: SandboxPool = snap.sandbox
    name = names["v"]
    assert pool.worker(name, snap.get(name).fingerprint).alive
    with pytest.raises(WorkerRetired, match="replaced by another version"):
        pool.worker(name, "sha256:" + "0" * 64)


def test_worker_environment_is_scrubbed(plugin_site, needs, closing, monkeypatch) -> None:
    monkeypatch.setenv("DIHYA_SECRET_TOKEN", "s3cr3t")
    snap, _names = sandboxed(plugin_site, {"env": hook(
        'import os, json\ncode["env.json"] = json.dumps(dict(os.environ))\nreturn code')})
    closing(snap)
    import json

    env = json.loads(run_generation(needs, snap).files["env.json"])
    assert "DIHYA_SECRET_TOKEN" not in env and "s3cr3t" not in json.dumps(env)
    assert set(env) <= {"PATH", "LC_ALL", "LANG", "HOME", "TMPDIR", "LC_CTYPE", "PWD"}


def test_after_generation_changes_cross_back_as_a_diff(plugin_site, needs, closing) -> None:
    body = ('code.pop("requirements.txt")\ncode["NEW.md"] = "new"\n'
            'code["wsgi.py"] = code["wsgi.py"] + "# touched\\n"\nreturn code')
    snap, names = sandboxed(plugin_site, {"edit": hook(body)})
    closing(snap)
    from dihya.registry import build_registry

    plain = run_generation(needs, build_registry(plugin_site.config(), path=plugin_site.path))
    result = run_generation(needs, snap)
    assert statuses(result) == {names["edit"]: "ok"}
    expected = dict(plain.files)
    expected.pop("requirements.txt")
    expected["NEW.md"] = "new"
    expected["wsgi.py"] += "# touched\n"
    assert result.files == expected


def test_malformed_changes_are_refused() -> None:
    from dihya.sandbox.pool import WorkerFailed, apply_changes

    assert apply_changes({"a": "1", "b": "2"}, {"set": {"c": "3"}, "removed": ["a"]}) == {
        "b": "2", "c": "3"}
    for bad in (None, [], {"set": []}, {"set": {}, "removed": "a"}):
        with pytest.raises(WorkerFailed):
            apply_changes({"a": "1"}, bad)


def test_a_recycled_worker_serves_until_its_replacement_is_ready(plugin_site, needs,
                                                                 closing, tmp_path) -> None:
    """The replacement starts in the background (here at the third call, `max_calls` - 1);
    the old worker answers meanwhile, past its limit if need be (here the replacement's
    import is held until the test lets it go: no call waits for it), and the first call
    after its hello gets it."""
    gate = plugin_site.site / "go"  # inside the worker's view (the plugin's site dir)
    gate.touch()
    wait_at_import = (f"#!full\nimport os, time\nwhile not os.path.exists({str(gate)!r}):\n"
                      "    time.sleep(0.01)\n" + plugin_source("NAME", body=hook(
                          'code["instance.txt"] = INSTANCE\nreturn code')))
    snap, names = sandboxed(plugin_site, {"r": wait_at_import}, max_calls=3,
                            start_timeout_s=120.0)
    closing(snap)
    assert snap.get(names["r"]).active, snap.get(names["r"]).message
    first = {run_generation(needs, snap).files["instance.txt"] for _ in range(2)}
    assert len(first) == 1
    gate.unlink()  # the replacement, started at the next call, waits at import
    for _ in range(4):  # served by the old worker: nothing waits for the new one
        assert run_generation(needs, snap).files["instance.txt"] in first
    gate.touch()
    deadline = time.monotonic() + 120
    while run_generation(needs, snap).files["instance.txt"] in first:
        assert time.monotonic() < deadline, "the replacement never took over"
        time.sleep(0.05)
    running = snap.sandbox.running()
    assert list(running) == [names["r"]]


def test_a_worker_restart_refuses_a_plugin_shadowed_since_it_was_verified(
        plugin_site, needs, closing, tmp_path) -> None:
    """A single-module plugin; after it was verified, a package of the same name appears
    beside it (a package wins over a module). A worker restarted later runs the gate again
    on its own import path: the plugin is not imported, the injected code never runs."""
    from support.wheels import build_wheel

    name = plugin_site.unique("single")
    module = "dihya_plugin_" + name
    wheel = build_wheel(plugin_site.wheels, f"dihya-plugin-{name}", "1.0.0",
                        {f"{module}.py": plugin_source(name, body=hook(
                            'code["ran.txt"] = "verified"\nreturn code'))},
                        {name: f"{module}:Plugin"})
    pip_install(sys.executable, str(wheel), target=plugin_site.site)
    config = plugin_site.config(plugin_site.entry(name, mode="sandbox"))
    snap = build_registry(config, path=plugin_site.path)
    closing(snap)
    assert snap.get(name).active, snap.get(name).message
    assert run_generation(needs, snap).files["ran.txt"] == "verified"
    shadow = plugin_site.site / module
    shadow.mkdir()
    (shadow / "__init__.py").write_text(plugin_source(name, body=hook(
        'code["ran.txt"] = "INJECTED"\nreturn code')))
    assert snap.sandbox.reap_idle(now=time.monotonic() + 10_000) == 1  # the next call restarts
    result = run_generation(needs, snap)
    assert "ran.txt" not in result.files, "the shadowing package ran"
    [report] = [h for h in result.plugins if h.name == name]
    assert report.status == "skipped" and "shadowed-module" in report.detail


def test_the_replacement_is_started_before_the_limit(plugin_site, needs, closing) -> None:
    """`prestart_margin` calls before `max_calls` the replacement starts; once it said
    hello, the old worker serves up to its limit and not one call more."""
    snap, _names = sandboxed(plugin_site, {"r": hook(
        'code["instance.txt"] = INSTANCE\nreturn code')}, max_calls=20, start_timeout_s=120.0)
    closing(snap)
    pool = snap.sandbox
    assert pool.prestart_margin == 2
    served = [run_generation(needs, snap).files["instance.txt"] for _ in range(19)]
    assert len(set(served)) == 1  # the 19th call (18 made before it) started the replacement
    deadline = time.monotonic() + 120
    while not any(w.alive for w in pool._replacements.values() if hasattr(w, "alive")):
        assert time.monotonic() < deadline, "no replacement was started ahead of the limit"
        time.sleep(0.05)
    served.append(run_generation(needs, snap).files["instance.txt"])  # the 20th: the limit
    assert len(set(served)) == 1
    after = run_generation(needs, snap).files["instance.txt"]
    assert after not in served, "the old worker served past its limit"
    assert len(pool.running()) == 1
