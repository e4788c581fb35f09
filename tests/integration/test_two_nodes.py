"""Two `dihya serve` nodes sharing one PostgreSQL store: a switch or a reload made on one
node reaches every worker of the other within a second — a plugin can be disabled and
enabled, and installed, upgraded and removed (pip, then a reload), on two nodes.

Each node is a directory of its own with its own config file (like two machines) that
approves the same plugins and names the same `[store] url` (a fresh schema of the test
PostgreSQL, dropped afterwards) and the same `[audit] key`; both run `--workers 2` from
the same venv, which stands for "the same wheels installed on both machines".

Which gunicorn worker answered a generation is told by `whoami`, a tiny in-process plugin
that writes its process id into the generated files: so every worker of a node is seen
to change, not just whichever one the requests happened to land on. Which version of the
new plugin `latecomer` (sandbox mode) ran is told the same way: it writes its version.

The tests:

- disable on node a, then enable on node b, of a bundled plugin;
- `latecomer`'s life: both its wheels (1.0.0 and a different 2.0.0) are approved by
  fingerprint in both config files before the servers start, and `auto_reload` is off, so
  no config edit and no file watch tells the nodes, only the store does. 1.0.0 is
  pip-installed into the shared venv, then reloaded on node a: node b runs it; 2.0.0 is
  pip-installed over it, then reloaded on node a: node b runs 2.0.0; it is pip-uninstalled,
  then reloaded on node b: node a no longer runs it (its generation report says `skipped`,
  `not-installed`). Between pip and the reload the other node is watched for CONTROL_S:
  it must not switch by itself (it still lists the plugin as before: absent, then 1.0.0,
  then 2.0.0, and no generation runs the new state; during the upgrade its workers keep
  running 1.0.0, whose code their sandbox worker holds, and never 2.0.0).

No generation may fail (status 200, every hook `ok` or `skipped`), no request answered
before the admin call was sent may be in the new state, and every request sent to the
other node 1 s or more after the call returned must be in it, on each of its workers;
`pytest -s` also prints, per worker, the interval in which it switched, counted from when
the call was sent. The servers poll the store's state version every 0.25 s; PostgreSQL
LISTEN/NOTIFY, where the core has it, only makes it sooner.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support.postgres import admin_engine, fresh_schema_url
from support.serving import Server
from support.wheels import build_plugin_wheel, plugin_source, venv_pip

ROOT = Path(__file__).resolve().parents[2]
TODO = json.loads((ROOT / "examples" / "needs" / "todo.json").read_text())

LIMIT_S = 1.0        # the promise: the other node follows within a second
WORKERS = 2
AFTER_LIMIT = 4      # requests per worker, sent after LIMIT_S, that must all be in the new state
CONTROL_S = 1.5      # how long a node is watched to show it does not change by itself

WHOAMI = "whoami"
LATE = "latecomer"
BUNDLED = {"example", "markdown-docs"}

WHOAMI_HOOK = '''
def after_generation(self, code, needs):
    import os
    code["whoami.txt"] = str(os.getpid())
    return code
'''
LATE_VERSIONS = ("1.0.0", "2.0.0")
LATE_HOOK = '''
def after_generation(self, code, needs):
    code["latecomer.txt"] = self.version
    return code
'''
HOOK_STATUSES = {"ok", "skipped"}  # anything else is a failed hook

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


# -- probes: one generation, which worker answered it and which plugins ran ----------------

@dataclass(frozen=True)
class Probe:
    sent: float      # seconds since the poller started
    answered: float
    pid: str         # the gunicorn worker that answered
    ran: frozenset[str]
    late: str | None  # the version of latecomer that ran, None if it did not
    report: tuple[tuple[str, str, str, str | None], ...]  # (plugin, hook, status, detail)


def probe(node: Server, token: str, ref: float) -> Probe:
    """One generation; it must succeed with no failed hook."""
    sent = time.monotonic() - ref
    status, _, body = node.call("POST", "/api/v1/generate", token, {"needs": TODO})
    answered = time.monotonic() - ref
    assert status == 200, body
    report = tuple((h["name"], h["hook"], h["status"], h.get("detail"))
                   for h in body["report"]["plugins"])
    failed = [h for h in report if h[2] not in HOOK_STATUSES]
    assert not failed, f"{node.base}: failed hooks at +{sent:.3f} s: {failed}"
    ran = frozenset(h[0] for h in report if h[2] == "ok")
    return Probe(sent, answered, body["files"]["whoami.txt"], ran,
                 body["files"].get("latecomer.txt"), report)


def running(plugin: str, yes: bool = True) -> Callable[[Probe], bool]:
    return lambda p: (plugin in p.ran) == yes


def late_is(version: str | None) -> Callable[[Probe], bool]:
    """latecomer ran in this `version` (None: it did not run)."""
    return lambda p: p.late == version


class Poller:
    """Generations on one node from `clients` concurrent callers, in background threads,
    until `until(probes)` is true or `timeout` passed.

    Concurrent callers make a node's sync workers share the requests (a single caller may
    be served by the same worker every time)."""

    def __init__(self, node: Server, token: str, until: Callable[[list[Probe]], bool],
                 timeout: float = 30.0, clients: int = WORKERS) -> None:
        self.ref = time.monotonic()
        self.timeout = timeout
        self._probes: list[Probe] = []
        self._errors: list[BaseException] = []
        self._lock, self._stop = threading.Lock(), threading.Event()

        def loop() -> None:
            while not self._stop.is_set() and self.now() < timeout:
                try:
                    p = probe(node, token, self.ref)
                except BaseException as exc:  # re-raised by join()
                    self._errors.append(exc)
                    self._stop.set()
                    return
                with self._lock:
                    self._probes.append(p)
                    if until(self._probes):
                        self._stop.set()

        self._threads = [threading.Thread(target=loop, daemon=True) for _ in range(clients)]
        for t in self._threads:
            t.start()

    def now(self) -> float:
        return time.monotonic() - self.ref

    def join(self) -> list[Probe]:
        for t in self._threads:
            t.join(self.timeout + 60)
        if self._errors:
            raise self._errors[0]
        with self._lock:
            return sorted(self._probes, key=lambda p: p.sent)


def poll(node: Server, token: str, until: Callable[[list[Probe]], bool],
         timeout: float = 30.0) -> list[Probe]:
    return Poller(node, token, until, timeout).join()


def seen_after(pids: set[str], after: float, n: int) -> Callable[[list[Probe]], bool]:
    """True once every worker in `pids` answered `n` requests sent at `after` or later."""
    def done(probes: list[Probe]) -> bool:
        return all(sum(p.pid == pid and p.sent >= after for p in probes) >= n for pid in pids)
    return done


def workers_of(node: Server, token: str) -> set[str]:
    """The pids of the node's workers, found by generating until each has answered twice."""
    seen: dict[str, int] = {}

    def done(probes: list[Probe]) -> bool:
        seen.clear()
        for p in probes:
            seen[p.pid] = seen.get(p.pid, 0) + 1
        return len(seen) >= WORKERS and min(seen.values()) >= 2

    assert done(poll(node, token, done)), f"never saw {WORKERS} workers answer: {seen}"
    assert len(seen) == WORKERS, seen
    return set(seen)


def everywhere(node: Server, token: str, pids: set[str], state: Callable[[Probe], bool],
               what: str) -> None:
    """Every worker of `node` answers twice, always in `state`."""
    probes = poll(node, token, seen_after(pids, 0.0, 2))
    wrong = [p for p in probes if not state(p)]
    assert not wrong, f"{what}: {wrong[:5]}"


def follow(node: Server, token: str, pids: set[str], new: Callable[[Probe], bool], what: str,
           action: Callable[[], Any], lead: float = 0.5,
           before: Callable[[], None] | None = None) -> tuple[Any, list[Probe]]:
    """Generate on every worker of `node` while `action` (an admin call on the other node)
    runs: for `lead` seconds before it (then `before()`, still before it), and after it until
    each worker answered AFTER_LIMIT requests sent LIMIT_S or more after it returned.

    Asserts that no request answered before the call was sent was in the new state (`new`
    true), that no worker went back to the old state once in the new one, and that every
    request sent LIMIT_S after the call returned saw the new state (and every request
    succeeded: see `probe`). Prints, per worker, when it switched. Returns the action's
    result and the probes sent after the limit."""
    marks: dict[str, float] = {}

    def until(probes: list[Probe]) -> bool:
        return "returned" in marks and seen_after(pids, marks["returned"] + LIMIT_S,
                                                  AFTER_LIMIT)(probes)

    poller = Poller(node, token, until)
    time.sleep(lead)
    if before is not None:
        before()
    marks["sent"] = poller.now()
    try:
        result = action()
    finally:
        marks["returned"] = poller.now()
        probes = poller.join()
    sent, returned = marks["sent"], marks["returned"]
    deadline = returned + LIMIT_S
    early = [p for p in probes if p.answered <= sent and new(p)]
    assert any(p.answered <= sent for p in probes) and not early, (
        f"{what}: already in the new state before the call: {early[:5]}")
    assert seen_after(pids, deadline, AFTER_LIMIT)(probes), (
        f"{what}: workers {sorted(pids)} did not all answer after the limit: "
        f"{sorted({p.pid for p in probes})}")
    late = [p for p in probes if p.sent >= deadline and not new(p)]
    assert not late, (f"{what}: still in the old state more than {LIMIT_S} s after the call "
                      f"returned (at +{returned:.3f} s): {late[:5]}")
    slowest = max(probes, key=lambda p: p.answered - p.sent)
    print(f"\n[two-nodes] {what}: the admin call took {returned - sent:.3f} s; slowest "
          f"generation on the other node {slowest.answered - slowest.sent:.3f} s (sent at "
          f"{slowest.sent - sent:+.3f} s); per worker of the other node, the switch happened "
          "between (times since the call was sent):")
    for pid in sorted(pids):
        mine = [p for p in probes if p.pid == pid]
        first_new = next(p for p in mine if new(p))
        back = [p for p in mine if not new(p) and p.sent > first_new.answered]
        assert not back, f"{what}: worker {pid} went back to the old state: {back[:5]}"
        old = [p for p in mine if not new(p)]
        since = old[-1].sent - sent if old else None
        print(f"[two-nodes]   worker {pid}: "
              + (f"{since:+.3f} s (an old-state request sent)" if since is not None
                 else "? (no old-state request)")
              + f" and {first_new.answered - sent:+.3f} s (a new-state request answered); "
              f"{len(mine)} requests")
    return result, [p for p in probes if p.sent >= deadline]


# -- the cluster -------------------------------------------------------------------------

@pytest.fixture(scope="session", autouse=True)
def postgres_reachable() -> None:
    """Skip (or fail, when PostgreSQL is mandatory) before any venv is built."""
    admin_engine().dispose()


@pytest.fixture(scope="module")
def whoami(installed_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The `whoami` plugin installed in the shared venv for this module's tests."""
    wheel = build_plugin_wheel(tmp_path_factory.mktemp("whoami"), WHOAMI,
                               source=plugin_source(WHOAMI, body=WHOAMI_HOOK))
    venv_pip(installed_venv, "install", str(wheel))
    try:
        yield WHOAMI
    finally:
        venv_pip(installed_venv, "uninstall", f"dihya-plugin-{WHOAMI}")


@pytest.fixture
def store_url() -> Iterator[str]:
    with fresh_schema_url() as url:
        yield url


class Cluster:
    """Two nodes: their own directory and config file, one shared store and audit key."""

    def __init__(self, backend: Any, root: Path, store_url: str) -> None:
        self.backend = backend
        self.homes = {n: root / f"node-{n}" for n in "ab"}
        self.servers: dict[str, Server] = {}
        self.audit_key = secrets.token_hex(32)
        self.store_url = store_url

    def configure(self, extra: str = "") -> None:
        """Write node a's config (approvals by the real CLI, then `extra`), copy it to b."""
        for home in self.homes.values():
            home.mkdir()
        config = self.config("a")
        config.write_text(
            "# node config: each node has its own file\n"
            # auto_reload off: a pip install alone is not noticed, only the store tells
            "[plugins]\nhook_timeout_s = 5.0\nauto_reload = false\n\n"
            f"[store]\nurl = {json.dumps(self.store_url)}\n\n"
            '[web]\nrate_limit = "100000/minute"\n\n'
            f"[audit]\nkey = {json.dumps(self.audit_key)}\n")
        self.cli("a", "plugins", "approve", *sorted(BUNDLED))
        self.cli("a", "plugins", "approve", WHOAMI, "--mode", "in-process")
        config.write_text(config.read_text() + extra)
        self.config("b").write_text(config.read_text())

    def config(self, node: str) -> Path:
        return self.homes[node] / "dihya.toml"

    def cli(self, node: str, *args: str) -> str:
        result = self.backend.dihya(*args, config=self.config(node))
        assert result.returncode == 0, result.stdout + result.stderr
        return str(result.stdout)

    def start(self) -> tuple[Server, Server]:
        for node, home in self.homes.items():
            self.servers[node] = Server(self.backend.venv, self.config(node), workers=WORKERS,
                                        cwd=home)
        for server in self.servers.values():
            server.wait_ready(timeout=60)
        return self.servers["a"], self.servers["b"]

    def halt(self) -> dict[str, tuple[int | None, str]]:
        """Stop both nodes (before their store goes); keep each log in `server.log`."""
        out = {}
        for node, server in self.servers.items():
            code = server.stop()
            (self.homes[node] / "server.log").write_text(server.output)
            out[node] = (code, server.output)
        self.servers.clear()
        return out

    def stop(self) -> None:
        """Stop both nodes; each must exit cleanly with no failed background reload."""
        problems = []
        for node, (code, output) in self.halt().items():
            if code != 0:
                problems.append(f"node {node} exited {code}")
            for line in output.splitlines():
                if "reload-failed" in line or "Traceback" in line:
                    problems.append(f"node {node}: {line}")
        assert not problems, "\n".join(problems[:20]) + f"\nlogs: {list(self.homes.values())}"


@pytest.fixture
def cluster(backend, whoami: str, store_url: str, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(backend, tmp_path, store_url)
    try:
        yield c
    finally:
        c.halt()  # after a failure: stop them before the schema goes


def admin_token(cluster: Cluster) -> str:
    """Created with node a's config, in the shared store: it works on node b too."""
    return cluster.cli("a", "tokens", "create", "--role", "admin", "--name", "ops") \
        .strip().splitlines()[-1]


def rows(node: Server, token: str) -> dict[str, dict[str, Any]]:
    status, _, body = node.call("GET", "/api/v1/plugins", token)
    assert status == 200, body
    return {r["name"]: r for r in body}


def lists_late(node: Server, token: str, version: str | None) -> None:
    """`node` lists latecomer active in `version` (None: does not list it), on whichever
    workers answer."""
    for _ in range(2 * WORKERS):
        row = rows(node, token).get(LATE)
        if version is None:
            assert row is None, row
        else:
            assert row is not None and (row["status"], row["reason"], row["version"]) == (
                "active", None, version), row


def reload_on(node: Server, token: str) -> Callable[[], dict[str, dict[str, Any]]]:
    """The admin call `POST /api/v1/plugins/reload` on `node`: it answers with its rows."""
    def reload() -> dict[str, dict[str, Any]]:
        status, _, body = node.call("POST", "/api/v1/plugins/reload", token)
        assert status == 200, body
        return {r["name"]: r for r in body}
    return reload


# -- the tests ---------------------------------------------------------------------------

def test_a_switch_on_one_node_reaches_every_worker_of_the_other(cluster: Cluster) -> None:
    cluster.configure()
    token = admin_token(cluster)
    a, b = cluster.start()
    everything = BUNDLED | {WHOAMI}
    workers = {"a": workers_of(a, token), "b": workers_of(b, token)}
    for node in (a, b):
        assert all(p.ran == everything for p in poll(node, token, lambda ps: len(ps) >= 4))

    # disable on node a: node b stops running it within a second, on every worker
    def disable() -> dict[str, Any]:
        status, _, row = a.call("POST", "/api/v1/plugins/markdown-docs/disable", token,
                                {"reason": "two-node test"})
        assert status == 200, row
        return dict(row)

    row, after = follow(b, token, workers["b"], running("markdown-docs", False),
                        what="disable on a -> b", action=disable)
    assert (row["status"], row["reason"]) == ("disabled", "disabled-by-admin")
    assert all(p.ran == {"example", WHOAMI} for p in after)
    for _ in range(2 * WORKERS):  # whichever worker answers
        row = rows(b, token)["markdown-docs"]
        assert (row["status"], row["reason"]) == ("disabled", "disabled-by-admin")

    # enable on node b: node a runs it again within a second, on every worker
    def enable() -> dict[str, Any]:
        status, _, row = b.call("POST", "/api/v1/plugins/markdown-docs/enable", token)
        assert status == 200, row
        return dict(row)

    row, after = follow(a, token, workers["a"], running("markdown-docs"),
                        what="enable on b -> a", action=enable)
    assert row["status"] == "active"
    assert all(p.ran == everything for p in after)
    cluster.stop()


def test_a_reload_on_one_node_makes_the_other_install_upgrade_and_remove_a_plugin(
        cluster: Cluster, tmp_path: Path) -> None:
    # both versions approved by fingerprint in both configs before the servers start,
    # installed later: no config file changes while they run, so only the store can tell
    # the other node
    wheels, approvals = {}, "\n# pre-approved from the wheels, before installing them\n"
    for version in LATE_VERSIONS:
        wheels[version] = build_plugin_wheel(
            tmp_path / "wheels" / version, LATE, version=version,
            source=plugin_source(LATE, version=version, body=LATE_HOOK))
        fingerprint = cluster.backend.dihya("plugins", "fingerprint",
                                            str(wheels[version])).stdout.strip()
        assert fingerprint.startswith("sha256:"), fingerprint
        approvals += (f'[[plugins.allow]]\nname = "{LATE}"\n'
                      f'distribution = "dihya-plugin-{LATE}"\nversion = "{version}"\n'
                      f'fingerprint = "{fingerprint}"\nmode = "sandbox"\n\n')
    cluster.configure(approvals)
    token = admin_token(cluster)
    a, b = cluster.start()
    workers = {"a": workers_of(a, token), "b": workers_of(b, token)}
    for node in (a, b):
        lists_late(node, token, None)
    venv = cluster.backend.venv
    without = BUNDLED | {WHOAMI}
    try:
        # install 1.0.0, reload on node a: node b lists and runs it within a second, on every
        # worker. Node b is watched for CONTROL_S after the install, before the reload:
        # installed alone, the plugin is not picked up (no config edit, no store change)
        venv_pip(venv, "install", str(wheels["1.0.0"]))
        listed, after = follow(b, token, workers["b"], late_is("1.0.0"),
                               what="install, reload on a -> b", action=reload_on(a, token),
                               lead=CONTROL_S, before=lambda: lists_late(b, token, None))
        assert (listed[LATE]["status"], listed[LATE]["version"]) == ("active", "1.0.0")
        assert all(p.ran == without | {LATE} for p in after)
        lists_late(b, token, "1.0.0")
        everywhere(a, token, workers["a"], late_is("1.0.0"), "node a after the install")

        # upgrade to 2.0.0 (pre-approved too), reload on node a: node b runs 2.0.0 within
        # a second, on every worker, and never before the reload was sent (until then its
        # workers keep 1.0.0: its sandbox worker holds the old code)
        venv_pip(venv, "install", str(wheels["2.0.0"]))
        listed, after = follow(b, token, workers["b"], late_is("2.0.0"),
                               what="upgrade, reload on a -> b", action=reload_on(a, token),
                               lead=CONTROL_S, before=lambda: lists_late(b, token, "1.0.0"))
        assert (listed[LATE]["status"], listed[LATE]["version"]) == ("active", "2.0.0")
        assert all(p.ran == without | {LATE} for p in after)
        lists_late(b, token, "2.0.0")
        everywhere(a, token, workers["a"], late_is("2.0.0"), "node a after the upgrade")

        # uninstall, reload on node b this time: node a stops running it within a second,
        # on every worker; still approved, it is reported skipped (not installed), not failed
        venv_pip(venv, "uninstall", f"dihya-plugin-{LATE}")
        listed, after = follow(a, token, workers["a"], late_is(None),
                               what="uninstall, reload on b -> a", action=reload_on(b, token),
                               lead=CONTROL_S, before=lambda: lists_late(a, token, "2.0.0"))
        assert LATE not in listed
        assert all(p.ran == without for p in after)
        reported = {h for p in after for h in p.report if h[0] == LATE}
        assert reported == {(LATE, "*", "skipped", "not-installed")}, reported
        print(f"[two-nodes]   node a's generation report on {LATE} after its removal: "
              f"{sorted({sum(h[0] == LATE for h in p.report) for p in after})} row(s) "
              f"{sorted(reported)}")
        lists_late(a, token, None)
        everywhere(b, token, workers["b"], late_is(None), "node b after the removal")
        cluster.stop()
    finally:
        cluster.halt()
        venv_pip(venv, "uninstall", f"dihya-plugin-{LATE}")  # only warns if already gone
