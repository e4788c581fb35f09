"""A real `dihya serve` on 127.0.0.1 for tests: start it, call it over HTTP, stop it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def call(base: str, method: str, path: str, token: str | None = None,
         body: Any = None, timeout: float = 30) -> tuple[int, dict[str, str], Any]:
    """One HTTP request; returns (status, headers, decoded JSON body or None)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read() or b"null")


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any DIHYA_* variable, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIHYA_")}
    env.update(extra or {})
    return env


class Server:
    """`dihya --config CONFIG serve --port P --workers N` from a venv, until `stop()`."""

    def __init__(self, venv: Path, config: Path, *, workers: int = 2, cwd: Path | None = None,
                 env: Mapping[str, str] | None = None, args: Sequence[str] = (),
                 port: int | None = None) -> None:
        self.port = port or free_port()
        self.workers = workers
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [str(venv / "bin" / "dihya"), "--config", str(config), "serve",
             "--port", str(self.port), "--workers", str(workers), *args],
            cwd=cwd or config.parent, env=clean_env(env), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        self.output = ""
        # Read the output as it comes: a server that logs more than a pipe holds (64 KiB:
        # a few hundred requests) would otherwise block on its next log line.
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._drain, daemon=True,
                                        name=f"dihya-serve-{self.port}-output")
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                self._lines.append(line)

    def wait_ready(self, timeout: float = 30) -> Server:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                status, _, last = call(self.base, "GET", "/readyz", timeout=5)
                # ready, and every worker booted (one answers /readyz before the last forks)
                if status == 200 and len(self.worker_pids()) >= self.workers:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server did not become ready (last /readyz: {last}):\n"
                           + self.output)

    def output_so_far(self) -> str:
        """What the server wrote until now (it keeps running)."""
        return "".join(list(self._lines))

    def worker_pids(self) -> list[int]:
        """The pids of the server's worker processes (the master's children)."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rfind(")") + 2:].split()[1]) == self.proc.pid:
                found.append(int(entry))
        return found

    def call(self, method: str, path: str, token: str | None = None,
             body: Any = None, timeout: float = 30) -> tuple[int, dict[str, str], Any]:
        return call(self.base, method, path, token, body, timeout)

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM, wait, kill if needed; keeps the server's output in `self.output`."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=10)
        self.output = "".join(self._lines)
        return self.proc.returncode
