"""pip commands of the tests, run in a fork of a process that imported pip once.

Every `python -m pip ...` a test runs pays pip's own import (0.5-1 s) before doing anything.
`run(cmd, ...)` takes the same arguments as `subprocess.run` and, for a command of the form
`[PYTHON, "-m", "pip", ...]`, hands it to a small server started with that very PYTHON (so
pip installs into that interpreter's environment: a venv's own pip for a venv, the test's
own interpreter for `--target` sites), which imported pip once and forks a child per command.
The child takes the caller's stdin/stdout/stderr (or capture files) as its own, its working
directory and environment, runs pip's `main` with the arguments, and exits with pip's code;
the caller gets a `CompletedProcess` as `subprocess.run` would give it (`check` raises
`CalledProcessError`, `timeout` raises `TimeoutExpired`).

One server per (interpreter, environment at start, less `PYTEST_CURRENT_TEST` and `DIHYA_*`,
which pip never reads): pip reads a few variables at import time (its cache directory), so a
command in another environment gets a server started in it. A server that cannot import
pip falls back to a subprocess, as does everything that is not a pip command.
`DIHYA_TEST_PIP_FORK=0` turns it off: every command runs in a subprocess.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import socket
import subprocess
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import IO, Any

# Runs in the server (`PYTHON -c SERVER FD`): what `python -m pip` does before pip's main
# (pip/__main__.py takes the working directory off sys.path), then a loop of forks.
SERVER = r'''
import importlib, json, os, socket, sys, traceback, warnings
sock = socket.socket(fileno=int(sys.argv[1]))
if sys.path and sys.path[0] in ("", os.getcwd()):
    sys.path.pop(0)
warnings.filterwarnings("ignore", category=DeprecationWarning, module=".*packaging\\.version")
try:
    import pip
    from pip._internal.cli.main import main
    from pip._internal.commands import commands_dict
    for _name in ("install", "uninstall", "wheel", "show"):
        importlib.import_module(commands_dict[_name].module_path)
except Exception:
    sock.sendall(b"no\n")
    raise SystemExit(0)
# what an install imports later, none of which reads the environment when imported
# (pkg_resources, which lists the installed distributions when imported, stays out)
for _name in ("importlib.metadata", "pip._internal.metadata.importlib",
              "pip._internal.resolution.resolvelib.resolver", "pip._vendor.distro", "argparse"):
    try:
        importlib.import_module(_name)
    except Exception:
        pass
main_file = os.path.join(os.path.dirname(pip.__file__), "__main__.py")
sock.sendall(b"ready\n")
while True:
    msg, fds, _flags, _addr = socket.recv_fds(sock, 1 << 20, 3)
    if not msg:
        raise SystemExit(0)
    req = json.loads(msg)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            sock.close()
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                os.close(fd)
            os.chdir(req["cwd"])
            os.environ.clear()
            os.environ.update(req["env"])
            sys.argv = [main_file, *req["args"]]
            importlib.invalidate_caches()
            code = main(req["args"])
        except SystemExit as exc:
            if exc.code is None:
                code = 0
            elif isinstance(exc.code, int):
                code = exc.code
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException:
            traceback.print_exc()
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass
            os._exit(code)
    for fd in fds:
        os.close(fd)
    _pid, status = os.waitpid(pid, 0)
    sock.sendall(json.dumps({"rc": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
'''

_IGNORED_VARS = ("PYTEST_CURRENT_TEST",)
_servers: OrderedDict[tuple[str, str], _Server | None] = OrderedDict()
MAX_SERVERS = 6  # the least recently used one stops when another starts
_servers_lock = threading.Lock()


def enabled() -> bool:
    return os.environ.get("DIHYA_TEST_PIP_FORK", "1") != "0"


class _Server:
    """One pip server: a process with pip imported, and our end of its socket."""

    def __init__(self, python: str, env: Mapping[str, str]) -> None:
        ours, theirs = socket.socketpair()
        with tempfile.TemporaryDirectory(prefix="dihya-pipfork-") as neutral:
            self.process = subprocess.Popen(
                [python, "-c", SERVER, str(theirs.fileno())], pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, cwd=neutral, env=dict(env),
                start_new_session=True)
            theirs.close()
            self.sock = ours
            self.reader = ours.makefile("rb")
            self.ready = self.reader.readline() == b"ready\n"
        self.lock = threading.Lock()

    def run(self, args: Sequence[str], cwd: str, env: Mapping[str, str], fds: Sequence[int],
            timeout: float | None) -> int:
        request = json.dumps({"args": list(args), "cwd": cwd, "env": dict(env)}).encode()
        with self.lock:
            self.sock.settimeout(timeout)
            socket.send_fds(self.sock, [request], list(fds))
            line = self.reader.readline()
        if not line:
            raise ConnectionError("the pip server ended")
        return int(json.loads(line)["rc"])

    def stop(self) -> None:
        try:
            self.reader.close()  # the socket's file: until it is closed, the fd stays open
            self.sock.close()  # EOF: the server ends
            self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.kill()

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            os.killpg(self.process.pid, 9)
        self.process.wait()


def _server(python: str, env: Mapping[str, str]) -> _Server | None:
    kept = {k: v for k, v in env.items() if k not in _IGNORED_VARS and not k.startswith("DIHYA_")}
    # a forked copy of this process gets servers of its own: the socket is not shared
    key = (python, json.dumps([os.getpid(), sorted(kept.items())]))
    with _servers_lock:
        if key in _servers:
            _servers.move_to_end(key)
            return _servers[key]
        server = _Server(python, env)
        _servers[key] = server if server.ready else None
        if not server.ready:
            server.stop()
        while len(_servers) > MAX_SERVERS:
            _key, old = _servers.popitem(last=False)
            if old is not None:
                with old.lock:  # not while a command of another thread runs in it
                    old.stop()
        return _servers[key]


@atexit.register
def stop_all() -> None:
    """End every pip server (at exit; a server also ends when our process goes)."""
    with _servers_lock:
        servers = [s for s in _servers.values() if s is not None]
        _servers.clear()
    for server in servers:  # every one told first (EOF), then each waited for
        with contextlib.suppress(OSError):
            server.reader.close()
            server.sock.close()
    for server in servers:
        server.stop()


def is_pip(cmd: Sequence[object]) -> bool:
    return len(cmd) >= 4 and list(map(str, cmd[1:3])) == ["-m", "pip"]


def run(cmd: Sequence[str | os.PathLike[str]], *, check: bool = False,
        capture_output: bool = False, text: bool = False, cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None, timeout: float | None = None,
        **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """`subprocess.run(cmd, ...)`, with a pip command run in a fork of a pip server."""
    args = [os.fspath(c) for c in cmd]
    if kwargs or not enabled() or not is_pip(args):
        return subprocess.run(args, check=check, capture_output=capture_output, text=text,
                              cwd=cwd, env=env, timeout=timeout, **kwargs)
    full_env = dict(os.environ if env is None else env)
    server = _server(args[0], full_env)
    if server is None:
        return subprocess.run(args, check=check, capture_output=capture_output, text=text,
                              cwd=cwd, env=env, timeout=timeout)
    where = os.path.abspath(cwd if cwd is not None else os.getcwd())
    files: list[IO[bytes]] = []
    try:
        files += [tempfile.TemporaryFile() for _ in range(2)] if capture_output else []  # noqa: SIM115
        fds = [_stdin(), *(f.fileno() for f in files)] if capture_output else [_stdin(), 1, 2]
        try:
            code = server.run(args[3:], where, full_env, fds, timeout)
        except TimeoutError:
            _forget(server)
            raise subprocess.TimeoutExpired(args, timeout or 0) from None
        out, err = (_read(f, text) for f in files) if capture_output else (None, None)
    finally:
        for f in files:
            f.close()
    if check and code != 0:
        raise subprocess.CalledProcessError(code, args, out, err)
    return subprocess.CompletedProcess(args, code, out, err)


def _forget(server: _Server) -> None:
    """A server whose pip command timed out is killed (with that command) and replaced."""
    server.kill()
    with _servers_lock:
        for key, value in list(_servers.items()):
            if value is server:
                del _servers[key]


def _stdin() -> int:
    """Our stdin, as a subprocess would inherit it (/dev/null when it is closed)."""
    try:
        os.fstat(0)
    except OSError:
        global _devnull
        _devnull = _devnull or open(os.devnull, "rb")  # noqa: SIM115 - kept for the process
        return _devnull.fileno()
    return 0


_devnull: IO[bytes] | None = None


def _read(f: IO[bytes], text: bool) -> str | bytes:
    f.seek(0)
    data = f.read()
    return data.decode(errors="replace").replace("\r\n", "\n") if text else data
