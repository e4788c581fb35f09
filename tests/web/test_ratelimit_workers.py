"""Per-token limits under a real `dihya serve --workers 2`: per worker with `memory://` (as
documented), exact across both workers with a shared Redis; and a storage that cannot be
reached is replaced by each worker's memory, never a failed request."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from test_api import TODO, Api, problem, write_config

from dihya.web import create_app
from support.redis import redis_server
from support.serving import Server, clean_env, free_port

LIMIT = 3  # per hour: a fixed window far longer than the test
CLIENTS = 4


def _token(config: Path) -> str:
    made = subprocess.run([str(Path(sys.prefix) / "bin" / "dihya"), "--config", str(config),
                           "tokens", "create", "--role", "developer", "--name", "busy"],
                          capture_output=True, text=True, env=clean_env(), check=True)
    return made.stdout.strip().splitlines()[-1]


def _hammer(server: Server, token: str, calls: int) -> list[tuple[int, dict[str, str]]]:
    """`calls` generations from CLIENTS concurrent clients (a new connection each, so both
    workers take some); every answer's status and headers."""
    answers: list[tuple[int, dict[str, str]]] = []
    lock = threading.Lock()
    todo = iter(range(calls))

    def client() -> None:
        for _ in todo:
            status, headers, body = server.call("POST", "/api/v1/generate", token,
                                                {"needs": TODO})
            if status == 429:
                assert body["type"] == "urn:dihya:problem:rate-limited", body
                assert int(headers["Retry-After"]) >= 1, headers
            with lock:
                answers.append((status, headers))

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert len(answers) == calls
    return answers


def _serve(tmp_path: Path, storage: str | None) -> tuple[Server, str]:
    extra = f'[web]\nrate_limit = "{LIMIT}/hour"\n'
    if storage:
        extra += f'rate_limit_storage = "{storage}"\n'
    config = write_config(tmp_path / "dihya.toml", [], extra)
    token = _token(config)
    return Server(Path(sys.prefix), config, workers=2).wait_ready(), token


def test_memory_limits_are_per_worker(tmp_path: Path) -> None:
    server, token = _serve(tmp_path, None)
    try:
        answers = _hammer(server, token, 6 * LIMIT)
    finally:
        server.stop()
    statuses = Counter(status for status, _ in answers)
    assert set(statuses) <= {200, 429}, statuses
    # each of the 2 workers counts for itself: at least LIMIT, at most 2 x LIMIT answered
    assert LIMIT <= statuses[200] <= 2 * LIMIT, statuses
    # every counter goes LIMIT-1 ... 0 once: a remaining value shows once per worker at most
    remaining = Counter(h["X-RateLimit-Remaining"] for s, h in answers if s == 200)
    assert set(remaining) <= {str(n) for n in range(LIMIT)} and max(remaining.values()) <= 2
    assert all(h["X-RateLimit-Limit"] == str(LIMIT) for _, h in answers)


def test_a_shared_storage_makes_the_limit_exact_across_workers(tmp_path: Path) -> None:
    with redis_server(tmp_path / "redis") as url:
        server, token = _serve(tmp_path, url)
        try:
            answers = _hammer(server, token, 6 * LIMIT)
        finally:
            server.stop()
    statuses = Counter(status for status, _ in answers)
    assert statuses == {200: LIMIT, 429: 5 * LIMIT}, statuses
    # read when the answer is made: another worker may have counted meanwhile
    assert {h["X-RateLimit-Remaining"] for s, h in answers if s == 200} <= \
        {str(n) for n in range(LIMIT)}


def test_an_unreachable_storage_counts_in_memory(plugin_site, tmp_path: Path) -> None:
    nobody = f"redis://127.0.0.1:{free_port()}"  # nothing listens there
    config = write_config(tmp_path / "dihya.toml", [],
                          f'[web]\nrate_limit = "2/minute"\nrate_limit_storage = "{nobody}"\n')
    app = create_app(config)
    api = Api(app, {})
    answers: list[Any] = [api.post("/api/v1/generate", json={"needs": TODO}) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["1", "0", "0"]
    problem(answers[-1], 429)
    assert app.extensions["dihya.limiter"].dead  # counting in this worker's memory
