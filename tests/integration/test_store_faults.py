"""The state store under faults, against a real `dihya serve --workers 2` (#13.4-5, #14.1).

One fault at a time, on a real SQLite file or a real PostgreSQL behind a TCP proxy the
test can cut (`support.tcpproxy`):

- the SQLite file deleted: every generation on both workers is 503 `database-file-deleted`
  with Retry-After (never 200 into the unlinked file, never 401), /readyz 503 says so, the
  CLI refuses to read or create a store in its place (exit 1), a worker restarted meanwhile
  fails closed too; the same file put back: every worker serves again;
- the file made immutable (chattr +i, as root), the file system full (a small tmpfs):
  503 `store-read-only` / `disk-full`, /readyz 503 naming the cause, the log naming it in
  words, and service back once the fault is lifted;
- PostgreSQL down (the proxy refuses): 503 `connection-refused`, never 500;
- a lost COMMIT acknowledgement (the proxy forwards an audit COMMIT, waits for the server's
  answer, then cuts the connection): the writer's retry finds the events committed, the
  request is answered 200, and its event is stored exactly once;
- and on every store: every generation answered 200 has its audit event, exactly one.

Never a fixed sleep: each expectation is polled with a generous deadline (CI is a loaded
2-core machine).
"""

from __future__ import annotations

import collections
import http.client
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from support.postgres import PG_URL, fresh_schema_url, postgres_required
from support.serving import Server, free_port
from support.tcpproxy import TcpProxy

ROOT = Path(__file__).resolve().parents[2]
TODO = json.loads((ROOT / "examples" / "needs" / "todo.json").read_text())
DEADLINE_S = 60.0
PROBLEM = "application/problem+json"

pytestmark = pytest.mark.slow

T = TypeVar("T")


def poll(what: str, probe: Callable[[], T], until: Callable[[T], bool],
         timeout: float = DEADLINE_S) -> T:
    deadline = time.monotonic() + timeout
    result = probe()
    while not until(result):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s; last: {result!r}")
        time.sleep(0.05)
        result = probe()
    return result


class Client:
    """Generations against one server, every answer kept: (status, request id, reason)."""

    def __init__(self, server: Server, token: str) -> None:
        self.server = server
        self.token = token
        self.answers: list[tuple[int, str, str | None]] = []

    def generate(self) -> tuple[int, str | None]:
        status, headers, body = self.server.call("POST", "/api/v1/generate", self.token,
                                                 {"needs": TODO}, timeout=60)
        reason = None
        if status != 200:
            assert headers.get("Content-Type") == PROBLEM, (status, body)
            reason = body.get("reason")
            assert status == 503, (status, body)  # never 500, never 401
            assert int(headers["Retry-After"]) >= 1
        self.answers.append((status, headers.get("X-Request-Id", ""), reason))
        return status, reason

    def several(self, times: int = 6) -> list[tuple[int, str | None]]:
        """`times` answers in a row: they land on either worker."""
        return [self.generate() for _ in range(times)]

    def ok_ids(self) -> list[str]:
        return [rid for status, rid, _ in self.answers if status == 200]


def readiness(server: Server, times: int = 6) -> list[tuple[int, str | None]]:
    out = []
    for _ in range(times):
        status, headers, body = server.call("GET", "/readyz", timeout=30)
        problem = (body or {}).get("store_problem")
        if status == 503:
            assert int(headers["Retry-After"]) >= 1
        out.append((status, problem["reason"] if problem else None))
    return out


def generation_events(backend: Any) -> collections.Counter[str]:
    """How many `generation` events the store holds per request id."""
    result = backend.dihya("audit", "export")
    assert result.returncode == 0, result.stderr
    return collections.Counter(e["request_id"] for e in json.loads(result.stdout)
                               if e["type"] == "generation" and e["outcome"] == "ok")


def assert_every_200_has_one_event(backend: Any, client: Client) -> None:
    events = generation_events(backend)
    ok = client.ok_ids()
    assert ok, "no generation succeeded"
    missing = [rid for rid in ok if events[rid] == 0]
    assert not missing, f"{len(missing)} of {len(ok)} answers 200 have no audit event"
    duplicated = {rid: n for rid, n in events.items() if n > 1}
    assert not duplicated, f"events stored more than once: {duplicated}"
    verify = backend.dihya("audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def write_config(backend: Any, store_url: str | None = None) -> None:
    lines = ["[plugins]", "allow = []", "[web]", 'rate_limit = "100000/minute"']
    if store_url:
        lines += ["[store]", f"url = {json.dumps(store_url)}"]
    backend.config.write_text("\n".join(lines) + "\n")


def make_token(backend: Any) -> str:
    made = backend.dihya("tokens", "create", "--role", "developer", "--name", "app")
    assert made.returncode == 0, made.stderr
    return made.stdout.strip().splitlines()[-1]


@pytest.fixture
def sqlite_served(backend: Any) -> Iterator[tuple[Server, Client]]:
    write_config(backend)
    token = make_token(backend)
    server = Server(backend.venv, backend.config, workers=2, cwd=backend.home).wait_ready()
    try:
        yield server, Client(server, token)
    finally:
        server.stop()


def test_a_deleted_sqlite_store_fails_closed_and_comes_back(backend: Any,
                                                            sqlite_served: Any) -> None:
    server, client = sqlite_served
    store = backend.home / "dihya.sqlite3"
    assert client.several() == [(200, None)] * 6
    kept = backend.home.parent / "kept.sqlite3"
    os.link(store, kept)  # the same inode stays reachable: it can be put back
    store.unlink()

    deleted = [(503, "database-file-deleted")] * 6
    poll("every generation 503 database-file-deleted", client.several,
         lambda seen: seen == deleted)
    poll("/readyz 503 saying the file was deleted", lambda: readiness(server),
         lambda seen: seen == deleted)

    # the CLI neither reads an empty store nor makes one in its place
    for command in (("tokens", "list"), ("audit", "verify"), ("audit", "export"),
                    ("tokens", "create", "--role", "viewer", "--name", "late"),
                    ("serve", "--port", str(free_port()))):
        result = backend.dihya(*command)
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        assert "is missing" in result.stderr and "store-marker" in result.stderr, command
        assert not store.exists(), f"`dihya {' '.join(command)}` created a new store"

    # a worker started while the file is gone fails closed as well (it used to open a
    # new, empty store and answer 401 to every token)
    before = set(server.worker_pids())
    os.kill(min(before), 9)
    poll("a new worker in place of the killed one", lambda: set(server.worker_pids()),
         lambda pids: len(pids) == 2 and pids != before)
    seen = client.several(10)  # the old worker: deleted; the new one: found it missing
    assert all(status == 503 and reason in ("database-file-deleted", "store-missing")
               for status, reason in seen), seen
    assert not store.exists()

    os.link(kept, store)  # the same file is back
    kept.unlink()
    poll("every generation 200 once the file is back", client.several,
         lambda seen: seen == [(200, None)] * 6)
    poll("/readyz 200", lambda: readiness(server), lambda seen: seen == [(200, None)] * 6)
    server.stop()
    assert "state store unavailable: database file deleted" in server.output
    assert "Traceback" not in server.output and '"internal"' not in server.output
    assert_every_200_has_one_event(backend, client)


def _chattr(flag: str, *paths: Path) -> None:
    subprocess.run(["chattr", flag, *map(str, paths)], check=True, capture_output=True)


def _make_read_only(server: Server, store: Path) -> Callable[[], None]:
    """Make the store read-only for the server; returns how to undo it.

    As root: `chattr +i` on the database, its WAL and their directory (not the -shm file,
    SQLite's shared-memory index: an immutable mapping kills the process that writes to
    it, SIGBUS). As another user, permissions bind only files opened afterwards: the
    files and the directory lose their write bits and both workers are killed, so the
    workers gunicorn starts in their place open the store read-only."""
    files = [p for p in (store, Path(f"{store}-wal")) if p.exists()]
    if os.geteuid() == 0:
        try:
            _chattr("+i", *files, store.parent)
        except (OSError, subprocess.CalledProcessError) as exc:
            if postgres_required():  # CI
                raise
            pytest.skip(f"chattr +i does not work here: {exc}")
        return lambda: _chattr("-i", *files, store.parent)
    modes = {p: p.stat().st_mode & 0o777 for p in (*files, store.parent)}
    for path in files:
        path.chmod(0o444)
    store.parent.chmod(0o555)
    before = set(server.worker_pids())
    for pid in before:
        os.kill(pid, 9)
    poll("two new workers", lambda: set(server.worker_pids()),
         lambda pids: len(pids) == 2 and not pids & before)

    def undo() -> None:
        for path, mode in modes.items():
            path.chmod(mode)
    return undo


def test_a_read_only_sqlite_store_answers_503_and_says_why(backend: Any,
                                                          sqlite_served: Any) -> None:
    server, client = sqlite_served
    store = backend.home / "dihya.sqlite3"
    assert client.several() == [(200, None)] * 6
    undo = _make_read_only(server, store)
    try:
        read_only = [(503, "store-read-only")] * 6
        poll("every generation 503 store-read-only", client.several,
             lambda seen: seen == read_only)
        poll("/readyz 503 store-read-only", lambda: readiness(server),
             lambda seen: seen == read_only)
    finally:
        undo()
    poll("every generation 200 once writable again", client.several,
         lambda seen: seen == [(200, None)] * 6)
    poll("/readyz 200", lambda: readiness(server), lambda seen: seen == [(200, None)] * 6)
    server.stop()
    assert "state store unavailable: store is read-only" in server.output
    assert "Traceback" not in server.output
    assert_every_200_has_one_event(backend, client)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs, mounted for the test (root only)."""
    where = tmp_path / "small"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs",
                              str(where)], capture_output=True, text=True)
    if mounted.returncode != 0:
        message = f"cannot mount a tmpfs for a full disk: {mounted.stderr.strip()}"
        if postgres_required():  # CI must run it
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(where: Path) -> Path:
    filler = where / "filler"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_answers_503_and_service_returns_when_space_does(
        backend: Any, small_disk: Path) -> None:
    write_config(backend, f"sqlite:///{small_disk / 'dihya.sqlite3'}")
    token = make_token(backend)
    server = Server(backend.venv, backend.config, workers=2, cwd=backend.home).wait_ready()
    client = Client(server, token)
    try:
        assert client.several() == [(200, None)] * 6
        filler = _fill(small_disk)
        full = [(503, "disk-full")] * 6
        # answers may stay 200 while SQLite still has room in its WAL: each with its event
        poll("every generation 503 disk-full", client.several, lambda seen: seen == full)
        poll("/readyz 503 disk-full", lambda: readiness(server), lambda seen: seen == full)
        filler.unlink()
        poll("every generation 200 once there is space", client.several,
             lambda seen: seen == [(200, None)] * 6)
        poll("/readyz 200", lambda: readiness(server), lambda seen: seen == [(200, None)] * 6)
    finally:
        server.stop()
    assert "state store unavailable: disk full" in server.output
    assert "Traceback" not in server.output
    assert_every_200_has_one_event(backend, client)


# -- PostgreSQL through a proxy -------------------------------------------------------------

@pytest.fixture
def pg_served(backend: Any) -> Iterator[tuple[Server, Client, TcpProxy]]:
    with fresh_schema_url() as url:
        host_port = PG_URL.split("@", 1)[1].split("/", 1)[0]
        host, _, port = host_port.partition(":")
        proxy = TcpProxy((host, int(port or 5432)))
        try:
            write_config(backend, proxy.url_for(url))
            token = make_token(backend)
            server = Server(backend.venv, backend.config, workers=2,
                            cwd=backend.home).wait_ready()
            try:
                yield server, Client(server, token), proxy
            finally:
                server.stop()
        finally:
            proxy.close()


@pytest.mark.postgres
def test_postgresql_down_is_503_connection_refused_then_back(backend: Any,
                                                            pg_served: Any) -> None:
    server, client, proxy = pg_served
    assert client.several() == [(200, None)] * 6
    proxy.refuse()
    refused = [(503, "connection-refused")] * 6
    poll("every generation 503 connection-refused", client.several,
         lambda seen: seen == refused)
    poll("/readyz 503 connection-refused", lambda: readiness(server),
         lambda seen: seen == refused)
    proxy.start()
    poll("every generation 200 once PostgreSQL is back", client.several,
         lambda seen: seen == [(200, None)] * 6)
    poll("/readyz 200", lambda: readiness(server), lambda seen: seen == [(200, None)] * 6)
    server.stop()
    assert "state store unavailable: connection refused" in server.output
    assert "Traceback" not in server.output
    assert_every_200_has_one_event(backend, client)


@pytest.mark.postgres
def test_a_lost_commit_acknowledgement_is_retried_without_a_duplicate(
        backend: Any, pg_served: Any) -> None:
    server, client, proxy = pg_served
    assert client.several(2) == [(200, None)] * 2
    for round_ in range(6):  # past psycopg's prepare threshold too
        proxy.lose_commit_reply()
        status, reason = client.generate()
        assert proxy.lost_replies == round_ + 1, "the COMMIT's answer was not cut"
        # the writer retried: its look-up found the batch committed, so the request
        # succeeded, and nothing was appended twice
        assert (status, reason) == (200, None)
    server.stop()
    assert "state store unavailable: connection lost" in server.output
    assert_every_200_has_one_event(backend, client)
    events = generation_events(backend)
    assert all(events[rid] == 1 for rid in client.ok_ids())


# -- kill -9 under load ----------------------------------------------------------------------

@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_store(request: pytest.FixtureRequest) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None
        return
    with fresh_schema_url() as url:
        yield url


def test_every_200_has_its_event_after_a_worker_is_killed_under_load(
        backend: Any, any_store: str | None) -> None:
    import threading

    write_config(backend, any_store)
    token = make_token(backend)
    server = Server(backend.venv, backend.config, workers=2, cwd=backend.home).wait_ready()
    clients = [Client(server, token) for _ in range(4)]
    stop = threading.Event()
    errors: list[BaseException] = []

    def load(client: Client) -> None:
        while not stop.is_set():
            try:
                client.generate()
            except (OSError, http.client.IncompleteRead):
                # the killed worker's connection: no (whole) answer, nothing to check
                pass
            except BaseException as exc:  # an unexpected status: reported below
                errors.append(exc)
                return

    threads = [threading.Thread(target=load, args=(c,)) for c in clients]
    try:
        for t in threads:
            t.start()
        poll("requests answered under load",
             lambda: sum(len(c.ok_ids()) for c in clients), lambda n: n >= 40)
        victims = server.worker_pids()
        os.kill(victims[0], 9)
        poll("a worker in place of the killed one", server.worker_pids,
             lambda pids: len(pids) == 2 and victims[0] not in pids)
        answered = sum(len(c.ok_ids()) for c in clients)
        poll("requests answered after the kill",
             lambda: sum(len(c.ok_ids()) for c in clients), lambda n: n >= answered + 40)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
        server.stop()
    assert not errors, errors
    merged = Client(server, token)
    merged.answers = [a for c in clients for a in c.answers]
    assert_every_200_has_one_event(backend, merged)
    print(f"{len(merged.ok_ids())} answers 200, each with its event")


def test_cli_reads_never_create_a_store(backend: Any, tmp_path: Path) -> None:
    """Where there is no store, read-only commands say so and create none; where there is
    no config, no command creates `./dihya.sqlite3`."""
    write_config(backend)
    store = backend.home / "dihya.sqlite3"
    for command in (("tokens", "list"), ("audit", "export"), ("audit", "verify"),
                    ("plugins", "list", "--json"), ("audit", "purge", "--older-than", "1")):
        result = backend.dihya(*command)
        assert result.returncode == 0, (command, result.stderr)
        assert not store.exists(), f"`dihya {' '.join(command)}` created a store"
    bare = tmp_path / "bare"
    bare.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIHYA_")}
    for command in (("tokens", "create", "--role", "admin", "--name", "x"),
                    ("tokens", "list"), ("audit", "verify"), ("plugins", "reload")):
        result = subprocess.run([str(backend.venv / "bin" / "dihya"), *command], cwd=bare,
                                env=env, capture_output=True, text=True, timeout=120)
        assert not (bare / "dihya.sqlite3").exists(), command
        if command[1] in ("create", "reload"):
            assert result.returncode == 1 and "no config file" in result.stderr, result
    shutil.rmtree(bare)


def test_concurrent_requests_of_threaded_workers_each_wait_for_their_own_event(
        backend: Any) -> None:
    """`dihya serve --threads 4`: the requests of a worker share commits (group commit) and
    every one answered 200 has its event, once."""
    import threading

    write_config(backend)
    token = make_token(backend)
    server = Server(backend.venv, backend.config, workers=2, cwd=backend.home,
                    args=("--threads", "4")).wait_ready()
    clients = [Client(server, token) for _ in range(8)]
    try:
        threads = [threading.Thread(target=c.several, args=(15,)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    finally:
        server.stop()
    merged = Client(server, token)
    merged.answers = [a for c in clients for a in c.answers]
    assert [status for status, _, _ in merged.answers] == [200] * 120
    assert "gthread" in server.output
    assert_every_200_has_one_event(backend, merged)
