"""A real `dihya serve` (gunicorn, 2 workers) on 127.0.0.1: start, generate, disable, stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TODO = json.loads((ROOT / "examples" / "needs" / "todo.json").read_text())

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def call(base: str, method: str, path: str, token: str | None = None,
         body: Any = None) -> tuple[int, dict[str, str], Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read() or b"null")


@pytest.fixture
def server(backend) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    assert backend.dihya("plugins", "approve", "example", "markdown-docs").returncode == 0
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIHYA_")}
    proc = subprocess.Popen(
        [str(backend.venv / "bin" / "dihya"), "--config", str(backend.config), "serve",
         "--port", str(port), "--workers", "2"],
        cwd=backend.home, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if call(base, "GET", "/readyz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        else:
            proc.kill()
            pytest.fail("the server did not become ready:\n" + (proc.communicate()[0] or ""))
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def token(backend, role: str, name: str) -> str:
    result = backend.dihya("tokens", "create", "--role", role, "--name", name)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def generated_by(base: str, tok: str) -> set[str]:
    status, _, body = call(base, "POST", "/api/v1/generate", tok, {"needs": TODO})
    assert status == 200, body
    return {p["name"] for p in body["report"]["plugins"] if p["status"] == "ok"}


def test_start_generate_disable_generate_stop(backend, server) -> None:
    base, proc = server
    admin, dev = token(backend, "admin", "ops"), token(backend, "developer", "app")
    assert call(base, "GET", "/healthz")[0] == 200
    status, headers, _ = call(base, "GET", "/api/v1/plugins")
    assert status == 401 and headers["Content-Type"] == "application/problem+json"
    assert generated_by(base, dev) == {"example", "markdown-docs"}

    status, _, row = call(base, "POST", "/api/v1/plugins/markdown-docs/disable", admin,
                          {"reason": "smoke test"})
    assert (status, row["reason"]) == (200, "disabled-by-admin")
    time.sleep(1.0)  # both workers check the shared state version at least every 0.5 s
    for _ in range(6):  # requests land on either worker
        assert generated_by(base, dev) == {"example"}

    assert call(base, "POST", "/api/v1/plugins/markdown-docs/enable", admin)[0] == 200
    time.sleep(1.0)
    assert generated_by(base, dev) == {"example", "markdown-docs"}

    status, _, spec = call(base, "GET", "/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.1")

    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
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
