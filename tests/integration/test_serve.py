"""A real `dihya serve` (gunicorn, 2 workers) on 127.0.0.1: start, generate, disable, stop."""

from __future__ import annotations

import json
import os
import re
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.serving import Server, call

ROOT = Path(__file__).resolve().parents[2]
TODO = json.loads((ROOT / "examples" / "needs" / "todo.json").read_text())

pytestmark = pytest.mark.slow


@pytest.fixture
def server(backend) -> Iterator[Server]:
    assert backend.dihya("plugins", "approve", "example", "markdown-docs").returncode == 0
    srv = Server(backend.venv, backend.config, workers=2, cwd=backend.home).wait_ready()
    try:
        yield srv
    finally:
        srv.stop()


def token(backend, role: str, name: str) -> str:
    result = backend.dihya("tokens", "create", "--role", role, "--name", name)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def generated_by(base: str, tok: str) -> set[str]:
    status, _, body = call(base, "POST", "/api/v1/generate", tok, {"needs": TODO})
    assert status == 200, body
    return {p["name"] for p in body["report"]["plugins"] if p["status"] == "ok"}


def scratch_dirs_of_children(master: int) -> list[Path]:
    """The sandbox scratch dirs made by the server's worker processes (children of
    `master`): `dihya-sbx-<pid>.<start>-...` in the temporary directory."""
    found = []
    for path in Path(tempfile.gettempdir()).glob("dihya-sbx-*"):
        match = re.match(r"dihya-sbx-(\d+)\.", path.name)
        if match is None:
            continue
        try:
            stat = Path(f"/proc/{match.group(1)}/stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rfind(")") + 2:].split()[1]) == master:
            found.append(path)
    return found


def test_start_generate_disable_generate_stop(backend, server) -> None:
    base = server.base
    admin, dev = token(backend, "admin", "ops"), token(backend, "developer", "app")
    assert call(base, "GET", "/healthz")[0] == 200
    status, headers, _ = call(base, "GET", "/api/v1/plugins")
    assert status == 401 and headers["Content-Type"] == "application/problem+json"
    assert generated_by(base, dev) == {"example", "markdown-docs"}

    status, _, row = call(base, "POST", "/api/v1/plugins/markdown-docs/disable", admin,
                          {"reason": "smoke test"})
    assert (status, row["reason"]) == (200, "disabled-by-admin")
    for _ in range(6):  # requests land on either worker: each sees the switch at once
        assert generated_by(base, dev) == {"example"}

    assert call(base, "POST", "/api/v1/plugins/markdown-docs/enable", admin)[0] == 200
    assert generated_by(base, dev) == {"example", "markdown-docs"}

    status, _, spec = call(base, "GET", "/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.1")

    scratches = scratch_dirs_of_children(server.proc.pid)
    assert scratches, "the bundled plugins run sandboxed: their workers have scratch dirs"
    assert server.stop() == 0
    assert [d for d in scratches if d.exists()] == [], "SIGTERM left scratch dirs behind"
    out = server.output
    for secret in (admin, dev, "Team todo list", "ops"):
        assert secret not in out, "the server log carries a token, a name or needs data"
    assert '"type":"generation"' in out and '"actor":"p-' in out


def test_tokens_cli(backend) -> None:
    created = backend.dihya("tokens", "create", "--role", "viewer", "--name", "reader")
    assert created.returncode == 0
    tok = created.stdout.strip().splitlines()[-1]
    assert tok.startswith("dihya_") and created.stdout.strip() == tok
    listed = json.loads(backend.dihya("tokens", "list", "--json").stdout)
    assert [(t["name"], t["role"]) for t in listed] == [("reader", "viewer")]
    assert tok not in json.dumps(listed)
    assert backend.dihya("tokens", "create", "--role", "root", "--name", "x").returncode == 2
    assert backend.dihya("tokens", "revoke", "reader").returncode == 0
    assert backend.dihya("tokens", "revoke", "reader").returncode == 1


def test_workers_stop_when_the_master_is_killed_and_a_restart_works(backend) -> None:
    """`kill -9` of the gunicorn master: its workers exit (they never serve unsupervised)
    and a new server starts on the same port."""
    assert backend.dihya("plugins", "approve", "example").returncode == 0
    first = Server(backend.venv, backend.config, workers=2, cwd=backend.home).wait_ready()
    try:
        workers = first.worker_pids()
        assert len(workers) == 2
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait(timeout=30)
        # gunicorn's own check of its parent runs only between idle waits of up to half its
        # 60 s timeout, and never under steady load; SIGTERM on the master's death takes
        # well under a second
        start = time.monotonic()
        while [p for p in workers if Path(f"/proc/{p}").exists()]:
            assert time.monotonic() - start < 20, "the workers kept running without a master"
            time.sleep(0.1)
        print(f"workers gone {time.monotonic() - start:.2f} s after the master's death")
    finally:
        first.stop()
    again = Server(backend.venv, backend.config, workers=2, cwd=backend.home,
                   port=first.port).wait_ready(timeout=60)
    try:
        assert again.call("GET", "/healthz")[0] == 200
    finally:
        again.stop()


def test_kill_switches_are_read_your_writes_across_workers(backend) -> None:
    """Once disable (or enable) answered, every generation that starts afterwards, on any of
    three workers, sees it: no wait, no retry."""
    assert backend.dihya("plugins", "approve", "example", "markdown-docs").returncode == 0
    srv = Server(backend.venv, backend.config, workers=3, cwd=backend.home).wait_ready()
    try:
        admin, dev = token(backend, "admin", "ops"), token(backend, "developer", "app")
        for _ in range(9):  # every worker has built its registry and runs both plugins
            assert generated_by(srv.base, dev) == {"example", "markdown-docs"}
        for switch, expected in (("disable", {"example"}),
                                 ("enable", {"example", "markdown-docs"})) * 2:
            status, _, _ = call(srv.base, "POST", f"/api/v1/plugins/markdown-docs/{switch}",
                                admin, {} if switch == "disable" else None)
            assert status == 200
            seen = [generated_by(srv.base, dev) for _ in range(15)]
            assert all(s == expected for s in seen), (switch, seen)
    finally:
        srv.stop()


def test_cli_config_edits_are_read_your_writes_across_workers(backend) -> None:
    """Once `dihya plugins approve | disable | enable | revoke` returned, every generation
    that starts afterwards, on any of three workers, sees the edited config: the command
    bumps the store's state version, so no worker answers from its last poll."""
    assert backend.dihya("plugins", "approve", "example").returncode == 0
    srv = Server(backend.venv, backend.config, workers=3, cwd=backend.home).wait_ready()
    try:
        dev = token(backend, "developer", "app")
        for _ in range(9):  # every worker has built its registry
            assert generated_by(srv.base, dev) == {"example"}
        both = {"example", "markdown-docs"}
        for command, expected in ((("approve", "markdown-docs"), both),
                                  (("disable", "markdown-docs", "--reason", "audit"),
                                   {"example"}),
                                  (("enable", "markdown-docs"), both),
                                  (("revoke", "markdown-docs"), {"example"})):
            result = backend.dihya("plugins", *command)
            assert result.returncode == 0, result.stderr
            assert "warning" not in result.stderr, result.stderr
            seen = [generated_by(srv.base, dev) for _ in range(15)]
            assert all(s == expected for s in seen), (command, seen)
    finally:
        srv.stop()
