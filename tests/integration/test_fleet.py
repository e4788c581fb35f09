"""Fleet facts with real processes: two `dihya serve` instances of three workers each,
sharing one PostgreSQL store (a fresh schema of the test database).

- Quarantine counts across the fleet: `flaky` (in-process, it raises while a marker file
  exists) fails on requests sent in turn to both instances; it is quarantined after exactly
  `quarantine_after` failures in a row, wherever they happened (counted per worker, as
  before, it would need that many on one worker), a success in between resets the count,
  and one `plugin.quarantined` event is written. The reset — the API's enable on one
  instance, then the CLI's `plugins enable` with the other instance's config — reaches
  every worker of both: each of the six answers with `flaky` running again.
- An upgrade with no gap: while four clients generate against a two-worker server
  (`auto_reload` on), the next version of `upgr` (sandbox mode, two hooks) is approved
  from its wheel (`plugins approve upgr --wheel`) and then pip-installed: every generation
  ran `upgr` (both hooks `ok`, in one version), every worker moved to 2.0.0 and none went
  back; the approval of 1.0.0 is kept (the way back) until revoked by version.
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
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.postgres import admin_engine, fresh_schema_url
from support.redis import redis_server
from support.serving import Server
from support.wheels import build_plugin_wheel, plugin_source, venv_pip

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
    venv_pip(installed_venv, "install", *map(str, wheels))
    try:
        yield
    finally:
        venv_pip(installed_venv, "uninstall", f"dihya-plugin-{WHO}", f"dihya-plugin-{FLAKY}")


class Fleet:
    """Two instances: a directory and config file each, one store and audit key."""

    def __init__(self, backend: Any, root: Path, store_url: str) -> None:
        self.backend = backend
        self.homes = {n: root / f"node-{n}" for n in "ab"}
        self.servers: dict[str, Server] = {}
        self.audit_key = secrets.token_hex(32)
        self.store_url = store_url

    def configure(self, extra: str = "", rate_limit: str = "100000/minute",
                  storage: str = "memory://", auto_reload: bool = False) -> None:
        for home in self.homes.values():
            home.mkdir()
        config = self.config("a")
        config.write_text(
            f"[plugins]\nhook_timeout_s = 5.0\nauto_reload = {json.dumps(auto_reload)}\n\n"
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

    def start(self, workers: int = WORKERS, nodes: str = "ab") -> tuple[Server, Server]:
        for node in nodes:
            home = self.homes[node]
            self.servers[node] = Server(self.backend.venv, self.config(node), workers=workers,
                                        cwd=home)
        for server in self.servers.values():
            server.wait_ready(timeout=90)
        return self.servers["a"], self.servers.get("b", self.servers["a"])

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
    backend.pip("redis>=5")  # the client `limits`' Redis storage needs (dihya-core[redis])
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


UPGR = "upgr"
UPGR_HOOKS = '''
def before_generation(self, needs):
    return needs

def after_generation(self, code, needs):
    code["upgr.txt"] = self.version
    return code
'''


def test_an_upgrade_under_load_never_loses_the_plugin(fleet: Fleet, installed_venv: Path,
                                                      tmp_path: Path) -> None:
    wheels = {v: build_plugin_wheel(tmp_path / v, UPGR, version=v,
                                    source=plugin_source(UPGR, version=v, body=UPGR_HOOKS))
              for v in ("1.0.0", "2.0.0")}
    venv_pip(installed_venv, "install", str(wheels["1.0.0"]))
    try:
        fleet.configure(auto_reload=True)
        fleet.cli("a", "plugins", "approve", UPGR)
        token = admin_token(fleet)
        a, _ = fleet.start(workers=2, nodes="a")
        pids = {str(p) for p in a.worker_pids()}
        seen: list[tuple[float, str, str | None, tuple[str, ...]]] = []
        lock, stop = threading.Lock(), threading.Event()
        deadline = time.monotonic() + 240

        def client() -> None:
            while not stop.is_set() and time.monotonic() < deadline:
                pid, report = generate_full(a, token)
                with lock:
                    seen.append(report)
                    del pid

        def generate_full(node: Server, token: str) -> tuple[str, Any]:
            status, _, body = node.call("POST", "/api/v1/generate", token, {"needs": TODO})
            assert status == 200, body
            hooks = tuple(sorted(f"{h['hook']}:{h['status']}" for h in body["report"]["plugins"]
                                 if h["name"] == UPGR))
            return "", (time.monotonic(), body["files"]["who.txt"],
                        body["files"].get("upgr.txt"), hooks)

        def wait_for(check: Callable[[], bool], what: str, timeout: float = 90) -> None:
            end = time.monotonic() + timeout
            while not check():
                assert time.monotonic() < end, what
                time.sleep(0.1)

        def on_every_worker(version: str, since: float, n: int = 3) -> bool:
            with lock:
                return all(sum(1 for t, p, v, _ in seen if p == pid and v == version
                               and t >= since) >= n for pid in pids)

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            wait_for(lambda: on_every_worker("1.0.0", 0.0), "1.0.0 never ran everywhere")
            out = fleet.cli("a", "plugins", "approve", UPGR, "--wheel", str(wheels["2.0.0"]))
            assert "still approved: 1.0.0" in out, out
            approved = time.monotonic()
            wait_for(lambda: on_every_worker("1.0.0", approved + 1.0),
                     "the approval of 2.0.0 stopped 1.0.0")
            venv_pip(installed_venv, "install", str(wheels["2.0.0"]))
            installed = time.monotonic()
            wait_for(lambda: on_every_worker("2.0.0", installed), "2.0.0 never ran everywhere")
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        missing = [r for r in seen if r[3] != ("after_generation:ok", "before_generation:ok")]
        during = [r for r in seen if r[0] >= approved]
        print(f"\n[fleet] upgrade under load: {len(seen)} generations, {len(during)} from the "
              f"approval of 2.0.0 on; {len(missing)} without upgr")
        assert not missing, missing[:5]
        for pid in pids:
            versions = [v for _t, p, v, _h in sorted(seen) if p == pid]
            first_new = versions.index("2.0.0")
            assert set(versions[first_new:]) == {"2.0.0"}, f"worker {pid} went back"
        rows = {r["version"]: r for r in json.loads(fleet.cli("a", "plugins", "list", "--json"))
                if r["name"] == UPGR}
        assert set(rows) == {"2.0.0"} and rows["2.0.0"]["status"] == "active", rows
        config = fleet.config("a").read_text()
        assert config.count(f'name = "{UPGR}"') == 2  # 1.0.0 kept: the way back
        fleet.cli("a", "plugins", "revoke", UPGR, "--version", "1.0.0")
        assert fleet.config("a").read_text().count(f'name = "{UPGR}"') == 1
        fleet.halt()
    finally:
        venv_pip(installed_venv, "uninstall", f"dihya-plugin-{UPGR}")
