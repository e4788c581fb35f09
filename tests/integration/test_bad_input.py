"""Bad input costs a bounded amount: a real `dihya serve` worker answers floods of
invalid or deeply nested bodies with small 4xx answers, and its memory returns to where it
was (a worker grew from 79 to 254 MB after such bodies and stayed there)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.serving import Server, call

ROOT = Path(__file__).resolve().parents[2]
TODO = json.loads((ROOT / "examples" / "needs" / "todo.json").read_text())

pytestmark = pytest.mark.slow


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def post_raw(base: str, token: str, body: bytes) -> tuple[int, int]:
    """POST /api/v1/generate with a raw body; (status, size of the answer)."""
    request = urllib.request.Request(base + "/api/v1/generate", data=body, method="POST",
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, len(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, len(exc.read())


@pytest.fixture
def server(backend) -> Iterator[Server]:
    backend.config.write_text('[plugins]\nallow = []\n[web]\nrate_limit = "100000/minute"\n')
    srv = Server(backend.venv, backend.config, workers=1, cwd=backend.home).wait_ready()
    try:
        yield srv
    finally:
        srv.stop()


def test_floods_get_small_answers_and_memory_comes_back(backend, server) -> None:
    created = backend.dihya("tokens", "create", "--role", "developer", "--name", "flood")
    token = created.stdout.strip().splitlines()[-1]
    [worker] = server.worker_pids()
    bad = [
        (json.dumps({"needs": dict(TODO, entities=[1] * 100_000)}).encode(), 422),
        (b"[" * 200_000, 400),
        (json.dumps({"needs": {"entities": [[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]}})
         .encode(), 422),
        (json.dumps({"needs": dict(TODO, project="x" * 900_000)}).encode(), 422),
    ]
    for _ in range(10):  # warm: every code path allocated once, caches filled
        assert call(server.base, "POST", "/api/v1/generate", token, {"needs": TODO})[0] == 200
        for body, status in bad:
            assert post_raw(server.base, token, body)[0] == status
    before = rss_mib(worker)
    for _ in range(15):
        for body, status in bad:
            got, size = post_raw(server.base, token, body)
            assert got == status and size < 20_000, (status, got, size)
    after = rss_mib(worker)
    print(f"worker RSS {before:.1f} MiB -> {after:.1f} MiB after {15 * len(bad)} bad bodies")
    assert after - before < 25, f"the worker grew from {before:.1f} to {after:.1f} MiB"
