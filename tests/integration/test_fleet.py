"""Fleet facts with real processes: two `dihya serve` instances of three workers each,
sharing one PostgreSQL store (a fresh schema of the test database).

- Quarantine counts across the fleet: `flaky` (in-process, it raises while a marker file
  exists) fails on requests sent in turn to both instances; it is quarantined after exactly
  `quarantine_after` failures in a row, wherever they happened (counted per worker, as
  before, it would need that many on one worker), a success in between resets the count,
  and one `plugin.quarantined` event is written. The reset — the API's enable on one
  instance, then the CLI's `plugins enable` with the other instance's config — reaches
  every worker of both: each of the six answers with `flaky` running again.
- Rate limits are exact with a shared Redis (`redis-server` of its own, on a free port):
  two instances of two workers each count in it, and a token gets exactly its limit, not
  four times it; another token has its own. `plugins verify` notes per-worker limits when
  the storage is `memory://`, and says nothing once it is Redis.

Each generation names the gunicorn worker that answered (`fleetwho`, an in-process plugin
that writes its process id), so "every worker" is checked, not just whichever answered.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.postgres import admin_engine, fresh_schema_url
from support.redis import redis_server
from support.serving import Server
from support.wheels import build_plugin_wheel, plugin_source

ROOT = Path(__file__).resolve().parents[2]
TODO = json.loads((ROOT / "examples" / "needs" / "todo.json").read_text())
WORKERS = 3
QUARANTINE_AFTER = 4
FLAKY = "flaky"
WHO = "fleetwho"

WHO_HOOK = '''
def after_generation(self, code, needs):
    import os
    code["who.txt"] = str(os.getpid())
    return code
'''


def flaky_hook(marker: Path) -> str:
    return f'''
def before_generation(self, needs):
    import os
    if os.path.exists({str(marker)!r}):
        raise ValueError("down in worker " + str(os.getpid()))
    return needs
'''


pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture(scope="module", autouse=True)
def postgres_reachable() -> None:
    admin_engine().dispose()


def pip(venv: Path, *args: str) -> None:
    extra = ["--no-deps"] if args[0] == "install" else ["-y"]
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", *args, *extra, "--quiet",
                    "--disable-pip-version-check"], check=True)


@pytest.fixture(scope="module")
def marker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("flaky") / "failing"


@pytest.fixture(scope="module")
def fleet_plugins(installed_venv: Path, marker: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """`fleetwho` and `flaky` installed in the shared venv for this module's tests."""
    out = tmp_path_factory.mktemp("fleet-wheels")
    wheels = [build_plugin_wheel(out, WHO, source=plugin_source(WHO, body=WHO_HOOK)),
              build_plugin_wheel(out, FLAKY, source=plugin_source(FLAKY,
                                                                  body=flaky_hook(marker)))]
    pip(installed_venv, "install", *map(str, wheels))
    try:
        yield
    finally:
        pip(installed_venv, "uninstall", f"dihya-plugin-{WHO}", f"dihya-plugin-{FLAKY}")


class Fleet:
    """Two instances: a directory and config file each, one store and audit key."""

    def __init__(self, backend: Any, root: Path, store_url: str) -> None:
        self.backend = backend
        self.homes = {n: root / f"node-{n}" for n in "ab"}
        self.servers: dict[str, Server] = {}
        self.audit_key = secrets.token_hex(32)
        self.store_url = store_url

    def configure(self, extra: str = "", rate_limit: str = "100000/minute",
                  storage: str = "memory://") -> None:
        for home in self.homes.values():
            home.mkdir()
        config = self.config("a")
        config.write_text(
            "[plugins]\nhook_timeout_s = 5.0\nauto_reload = false\n\n"
            f"[store]\nurl = {json.dumps(self.store_url)}\n\n"
            f"[web]\nrate_limit = {json.dumps(rate_limit)}\n"
            f"rate_limit_storage = {json.dumps(storage)}\n\n"
            f"[audit]\nkey = {json.dumps(self.audit_key)}\n\n"
            f"[sandbox]\nquarantine_after = {QUARANTINE_AFTER}\n" + extra)
        self.cli("a", "plugins", "approve", WHO, FLAKY, "--mode", "in-process")
        self.config("b").write_text(config.read_text())

    def config(self, node: str) -> Path:
        return self.homes[node] / "dihya.toml"

    def cli(self, node: str, *args: str) -> str:
        result = self.backend.dihya(*args, config=self.config(node))
        assert result.returncode == 0, result.stdout + result.stderr
        return str(result.stdout)

    def start(self, workers: int = WORKERS) -> tuple[Server, Server]:
        for node, home in self.homes.items():
            self.servers[node] = Server(self.backend.venv, self.config(node), workers=workers,
                                        cwd=home)
        for server in self.servers.values():
            server.wait_ready(timeout=90)
        return self.servers["a"], self.servers["b"]

    def halt(self) -> None:
        problems = []
        for node, server in self.servers.items():
            code = server.stop()
            (self.homes[node] / "server.log").write_text(server.output)
            if code != 0:
                problems.append(f"node {node} exited {code}")
            problems += [f"node {node}: {line}" for line in server.output.splitlines()
                         if "reload-failed" in line or "Traceback" in line]
        self.servers.clear()
        assert not problems, "\n".join(problems[:20])


@pytest.fixture
def fleet(backend: Any, fleet_plugins: None, tmp_path: Path) -> Iterator[Fleet]:
    with fresh_schema_url() as url:
        f = Fleet(backend, tmp_path, url)
        try:
            yield f
        finally:
            if f.servers:
                f.halt()


def admin_token(fleet: Fleet, name: str = "ops") -> str:
    return fleet.cli("a", "tokens", "create", "--role", "admin", "--name", name) \
        .strip().splitlines()[-1]


def verify_notes(fleet: Fleet) -> list[dict[str, Any]]:
    """The `rate-limits` rows of `plugins verify --json` on node a."""
    rows = json.loads(fleet.cli("a", "plugins", "verify", "--json"))
    return [r for r in rows if r["check"] == "rate-limits"]


def generate(node: Server, token: str) -> tuple[str, dict[str, dict[str, Any]]]:
    """One generation: (the worker that answered, {plugin: its report entry})."""
    status, _, body = node.call("POST", "/api/v1/generate", token, {"needs": TODO})
    assert status == 200, body
    return body["files"]["who.txt"], {h["name"]: h for h in body["report"]["plugins"]}


def every_worker(node: Server, token: str, check: Callable[[dict[str, dict[str, Any]]], bool],
                 what: str, timeout: float = 30.0) -> None:
    """Generate from WORKERS concurrent clients until each worker of `node` answered twice
    with `check` true (once true on a worker, it must stay true there)."""
    pids = {str(p) for p in node.worker_pids()}
    assert len(pids) == WORKERS, pids
    good: dict[str, int] = {}
    bad: list[tuple[str, Any]] = []
    lock, done = threading.Lock(), threading.Event()
    deadline = time.monotonic() + timeout

    def client() -> None:
        while not done.is_set() and time.monotonic() < deadline:
            pid, report = generate(node, token)
            with lock:
                if check(report):
                    good[pid] = good.get(pid, 0) + 1
                elif good.get(pid):
                    bad.append((pid, report))
                if all(good.get(p, 0) >= 2 for p in pids):
                    done.set()

    threads = [threading.Thread(target=client) for _ in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 60)
    assert not bad, f"{what}: a worker went back: {bad[:3]}"
    assert done.is_set(), f"{what}: not every worker of {node.base} got there: {good}"


def quarantined(report: dict[str, dict[str, Any]]) -> bool:
    return report[FLAKY] == {"name": FLAKY, "hook": "*", "status": "skipped", "ms": 0.0,
                             "detail": "disabled/quarantined"}


def running(report: dict[str, dict[str, Any]]) -> bool:
    return report[FLAKY]["status"] == "ok"


def quarantine_events(fleet: Fleet) -> list[dict[str, Any]]:
    out = fleet.cli("a", "audit", "export", "--format", "json")
    events = json.loads(out)
    return [e for e in events if e["type"] == "plugin.quarantined"]


def test_quarantine_counts_across_workers_and_nodes(fleet: Fleet, marker: Path) -> None:
    fleet.configure()
    token = admin_token(fleet)
    notes = verify_notes(fleet)  # memory:// storage: limits are per worker, and it says so
    assert [(n["status"], n["reason"], n["ok"]) for n in notes] == [
        ("note", "per-worker-limits", True)]
    a, b = fleet.start()
    nodes = [a, b]
    every_worker(a, token, running, "before")
    every_worker(b, token, running, "before")

    def fail(n: int) -> set[str]:
        """`n` generations, sent in turn to a and b, each with flaky failing; the workers."""
        pids = set()
        for i in range(n):
            _pid, report = generate(nodes[i % 2], token)
            assert report[FLAKY]["status"] == "failed", (i, report[FLAKY])
            pids.add(report[FLAKY]["detail"].rsplit(" ", 1)[-1])
        return pids

    marker.touch()
    seen = fail(QUARANTINE_AFTER - 1)
    marker.unlink()
    assert running(generate(b, token)[1])  # a success resets the fleet's count
    marker.touch()
    seen |= fail(QUARANTINE_AFTER - 1)  # 2 x (limit - 1) failures, never limit in a row
    assert not quarantine_events(fleet)
    _pid, report = generate(b, token)  # the limit-th in a row: this one quarantines
    assert report[FLAKY]["status"] == "failed", report
    print(f"\n[fleet] failing workers seen: {len(seen | {report[FLAKY]['detail']})} "
          f"(of {2 * WORKERS})")
    assert len(seen) >= 2  # both instances counted into one number
    events = quarantine_events(fleet)
    assert len(events) == 1 and events[0]["plugin"] == FLAKY, events
    for node in nodes:  # at once, everywhere: no further failure anywhere
        every_worker(node, token, quarantined, "quarantined")

    # the reset (the API's enable on a) reaches every worker of both instances
    marker.unlink()
    status, _, row = a.call("POST", f"/api/v1/plugins/{FLAKY}/enable", token)
    assert status == 200 and row["status"] == "active", row
    for node in nodes:
        every_worker(node, token, running, "reset by the API")

    # quarantined again (the count started afresh), reset with the CLI on b's config
    marker.touch()
    fail(QUARANTINE_AFTER)
    assert len(quarantine_events(fleet)) == 2
    for node in nodes:
        every_worker(node, token, quarantined, "quarantined again")
    marker.unlink()
    fleet.cli("b", "plugins", "enable", FLAKY)
    for node in nodes:
        every_worker(node, token, running, "reset by the CLI")
    fleet.halt()


RATE = 12  # per hour: a fixed window far longer than the test


def test_rate_limits_are_exact_across_workers_and_nodes(fleet: Fleet, backend: Any,
                                                         tmp_path: Path) -> None:
    backend.pip("redis>=5")  # the client Flask-Limiter's Redis storage needs (dihya-core[redis])
    with redis_server(tmp_path / "redis") as url:
        fleet.configure(rate_limit=f"{RATE}/hour", storage=url)
        assert verify_notes(fleet) == []  # shared: nothing to note
        token, other = admin_token(fleet), admin_token(fleet, "ops-2")
        a, b = fleet.start(workers=2)
        statuses: list[int] = []
        pids: set[str] = set()
        lock = threading.Lock()
        calls = iter(range(3 * RATE))

        def client() -> None:
            for i in calls:
                status, headers, body = (a, b)[i % 2].call(
                    "POST", "/api/v1/generate", token, {"needs": TODO})
                with lock:
                    statuses.append(status)
                    if status == 200:
                        pids.add(body["files"]["who.txt"])
                    else:
                        assert status == 429 and "Retry-After" in headers, (status, body)

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        print(f"\n[fleet] {statuses.count(200)} generations allowed of {len(statuses)} sent "
              f"to 2 instances x 2 workers; served by {len(pids)} workers")
        assert statuses.count(200) == RATE and statuses.count(429) == 2 * RATE, statuses
        assert len(pids) >= 2  # more than one worker counted into the one limit
        status, _, _ = b.call("POST", "/api/v1/generate", other, {"needs": TODO})
        assert status == 200  # each token has its own limit
        fleet.halt()
