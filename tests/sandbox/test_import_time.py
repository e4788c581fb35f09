"""Confinement first, code second: what a sandboxed plugin's module can do while it is
being imported, and with what it kept for later.

A real plugin installed from a wheel probes at import time: unix sockets at the paths
where local services listen (PostgreSQL, MariaDB, Redis, Docker) and at one the test
listens on, TCP, `fork`, `io_uring`, a user namespace, the descriptors it was given and
the uid it runs as. At hook time it tries to use whatever it kept. Every layer must have
been in force before the first line of the module ran.
"""

from __future__ import annotations

import json
import os
import socket
import sysconfig
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sandbox_support import sandboxed

from dihya.pipeline import run_generation
from dihya.sandbox.layers import probe, sandbox_user
from support.wheels import plugin_source

SERVICE_SOCKETS = ("/run/postgresql/.s.PGSQL.5432", "/var/run/postgresql/.s.PGSQL.5432",
                   "/tmp/.s.PGSQL.5432", "/run/mysqld/mysqld.sock",
                   "/var/run/mysqld/mysqld.sock", "/run/redis/redis-server.sock",
                   "/var/run/redis/redis-server.sock", "/var/run/docker.sock")

PROBE = '''#!full
import ctypes, json, os, socket, stat, sys

KEPT = []
FOUND = {"uid": os.getuid(), "pth_ran": hasattr(sys, "dihya_test_pth_ran")}

def attempt(name, fn):
    try:
        FOUND[name] = ["ok", repr(fn())]
    except BaseException as exc:
        FOUND[name] = [type(exc).__name__, getattr(exc, "errno", None)]

def unix(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    s.connect(path)
    KEPT.append(s)

for path in PATHS:
    attempt("unix:" + path, lambda path=path: unix(path))

def tcp():
    s = socket.create_connection(("127.0.0.1", TCP_PORT), timeout=2)
    KEPT.append(s)

attempt("tcp", tcp)
attempt("socketpair", lambda: KEPT.extend(socket.socketpair()))

def fork():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    return os.waitpid(pid, 0)[1]

attempt("fork", fork)
libc = ctypes.CDLL(None, use_errno=True)

def syscall(number, *args):
    rc = libc.syscall(number, *args)
    if rc < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return rc

params = ctypes.create_string_buffer(120)
attempt("io_uring", lambda: syscall(425, 8, params))  # io_uring_setup (x86_64/aarch64)

def userns():
    if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))

attempt("userns", userns)
fds = {}
for fd in range(256):
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        continue
    fds[fd] = ("fifo" if stat.S_ISFIFO(mode) else "chr" if stat.S_ISCHR(mode) else
               "sock" if stat.S_ISSOCK(mode) else "reg" if stat.S_ISREG(mode) else "other")
FOUND["fds"] = fds
''' + plugin_source("NAME", body="""
def after_generation(self, code, needs):
    used = []
    for s in KEPT:
        try:
            s.sendall(b"SELECT 1;")
            used.append("sent")
        except OSError as exc:
            used.append(type(exc).__name__)
    FOUND["used_later"] = used
    code["probe.json"] = json.dumps(FOUND)
    return code
""")


@pytest.fixture
def listeners() -> Iterator[tuple[str, int, list[socket.socket], list[socket.socket]]]:
    """A pathname unix socket outside every path a worker may read (like a database's in
    /run), world-reachable so that only the sandbox's walls can keep a worker out, and a
    TCP listener."""
    home = Path(tempfile.mkdtemp(prefix="dihya-service-", dir="/var/tmp"))
    home.chmod(0o755)
    path = str(home / "service.sock")
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(path)
    os.chmod(path, 0o777)
    unix.listen()
    unix.settimeout(0)
    tcp = socket.create_server(("127.0.0.1", 0))
    tcp.settimeout(0)
    try:
        yield path, tcp.getsockname()[1], [unix], [tcp]
    finally:
        unix.close()
        tcp.close()
        os.unlink(path)
        home.rmdir()


def _accepted(sockets: list[socket.socket]) -> int:
    count = 0
    for sock in sockets:
        while True:
            try:
                sock.accept()[0].close()
                count += 1
            except BlockingIOError:
                break
    return count


@pytest.fixture
def pth_in_site_packages() -> Iterator[Path]:
    """A code-running .pth file in this interpreter's site-packages (harmless: it sets an
    attribute on `sys`), as an attacker or a careless package would leave."""
    site = Path(sysconfig.get_paths()["purelib"])
    pth = site / f"zz-dihya-test-{uuid.uuid4().hex[:8]}.pth"
    try:
        pth.write_text("import sys; sys.dihya_test_pth_ran = True\n")
    except OSError as exc:
        pytest.skip(f"cannot write into {site}: {exc}")
    try:
        yield pth
    finally:
        pth.unlink()


def _probe(plugin_site, needs, closing, listeners) -> dict:
    path, port, _, _ = listeners
    source = PROBE.replace("PATHS", repr([*SERVICE_SOCKETS, path])).replace(
        "TCP_PORT", str(port))
    snap, names = sandboxed(plugin_site, {"probe": source})
    closing(snap)
    record = snap.get(names["probe"])
    assert record.active, record.message
    result = run_generation(needs, snap)
    assert [h.status for h in result.plugins if h.name == names["probe"]] == ["ok"]
    return {"record": record, **json.loads(result.files["probe.json"])}


def _require(*names: str) -> None:
    missing = [n for n in names if probe()[n] != "available"]
    if missing:
        pytest.skip(f"layers unavailable here: {[(n, probe()[n]) for n in missing]}")


def test_no_socket_or_process_at_import_time(plugin_site, needs, closing, listeners,
                                             pth_in_site_packages) -> None:
    _require("seccomp", "landlock")
    found = _probe(plugin_site, needs, closing, listeners)
    path = listeners[0]
    for target in (*SERVICE_SOCKETS, path):
        # seccomp refuses socket() itself: EPERM, whatever the path
        assert found[f"unix:{target}"] == ["PermissionError", 1], (target, found)
    for action in ("tcp", "socketpair", "fork", "io_uring", "userns"):
        assert found[action][0] == "PermissionError", (action, found[action])
    assert found["used_later"] == []
    assert _accepted(listeners[2]) == 0 and _accepted(listeners[3]) == 0
    # a worker starts without `site`: the .pth file in site-packages never runs in it
    assert found["pth_ran"] is False


def test_the_channel_is_the_only_descriptor(plugin_site, needs, closing, listeners) -> None:
    _require("seccomp")
    found = _probe(plugin_site, needs, closing, listeners)
    kinds = sorted(found["fds"].values())
    # stdin and the frame stream (two pipes to the backend), fd 1 and 2 on /dev/null
    assert kinds == ["chr", "chr", "fifo", "fifo"], found["fds"]


def test_never_uid_0_when_the_backend_is_root(plugin_site, needs, closing,
                                              listeners) -> None:
    if os.geteuid() != 0:
        pytest.skip("the backend is not root: workers keep its uid")
    _require("user")
    found = _probe(plugin_site, needs, closing, listeners)
    user = sandbox_user()
    assert user is not None
    assert found["uid"] == user.pw_uid != 0
    assert f"user:{user.pw_name}" in found["record"].isolation
