"""A private Redis for tests: Debian's `redis-server` on a free port of 127.0.0.1, no
persistence, stopped afterwards. Never the machine's own Redis.

A missing `redis-server` skips the test, except when `CI=true` or `DIHYA_REQUIRE_REDIS=1`:
then it fails (`.ci/run` installs it).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from support.serving import free_port


def redis_required() -> bool:
    return (os.environ.get("CI", "").lower() == "true"
            or os.environ.get("DIHYA_REQUIRE_REDIS") == "1")


@contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """Start `redis-server` in `workdir`; yields its URL (`redis://127.0.0.1:PORT`)."""
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server is not installed (apt-get install redis-server)"
        if redis_required():
            pytest.fail(message + " (required: CI=true or DIHYA_REQUIRE_REDIS=1)")
        pytest.skip(message)
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server exited {proc.returncode}: "
                                   f"{proc.stdout.read() if proc.stdout else ''}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer PING within 30 s")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
