"""The sandbox's isolation layers, tried for real: a driver process started through
`launch()` confines itself with `confine()` (or not, to try the outer walls alone) and
attempts hostile actions.

No mocks. A test is skipped only when `probe()` says the layer it needs is unavailable
on this machine (the reason is in the skip message).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attr
import attrs
import pytest

import dihya
from dihya.sandbox import layers
from dihya.sandbox import outer as outer_layer
from dihya.sandbox.layers import SandboxPolicy, SandboxSetupError, launch, probe

AVAILABLE = "available"
SECRET = "s3cr3t-" + uuid.uuid4().hex

DRIVER = r'''
import json, os, sys
cfg = json.loads(sys.argv[1])
sys.path[:0] = cfg["paths"]
from dihya.sandbox.inner import confine
from dihya.sandbox.policy import SandboxPolicy
policy = SandboxPolicy(**cfg["policy"])
out = {"applied": []}
if cfg["stages"]:
    out["applied"] += confine(policy)
# imported after confinement, as a plugin would be
import ctypes, socket, subprocess, threading, _posixsubprocess
import xml.dom.minidom  # a stdlib package nobody imported yet
if cfg.get("sleep"):
    print(json.dumps(out), flush=True)
    import time
    time.sleep(600)

t = cfg["targets"]
results = out["results"] = {}

def act(name):
    def register(fn):
        try:
            results[name] = ["ok", repr(fn())]
        except BaseException as exc:
            results[name] = [type(exc).__name__, getattr(exc, "errno", None)]
        return fn
    return register

@act("tcp")
def _():
    socket.create_connection(("127.0.0.1", t["tcp_port"]), timeout=3).close()

@act("udp")
def _():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"leak", ("127.0.0.1", t["udp_port"]))

@act("udp_external")
def _():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"leak", ("192.0.2.1", 9))  # TEST-NET-1: needs a route off the machine

@act("abstract_unix")
def _():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect("\0" + t["abstract"])

@act("unix_pathname")
def _():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(t["unix_path"])

@act("root_listing")
def _():
    return sorted(os.listdir("/"))

@act("socketpair")
def _():
    socket.socketpair()

@act("write_tmp")
def _():
    open(t["tmp_file"], "w").write("x")

@act("write_root")
def _():
    open(t["root_file"], "w").write("x")

@act("write_backend_dir")
def _():
    open(t["planted_file"], "w").write("x")

@act("read_backend_config")
def _():
    return open(os.path.join(t["backend_dir"], "dihya.toml")).read()

@act("read_shadow")
def _():
    return open("/etc/shadow").read(10)

@act("read_parent_environ")
def _():
    return open(f"/proc/{t['parent_pid']}/environ", "rb").read(10)

@act("signal_parent")
def _():
    os.kill(t["parent_pid"], 0)

@act("env_secret")
def _():
    return os.environ.get("DIHYA_SECRET")

@act("environ")
def _():
    return sorted(os.environ)

@act("subprocess_run")
def _():
    return subprocess.run(["true"]).returncode

@act("os_system")
def _():
    return os.system("true")

@act("posix_spawn")
def _():
    pid = os.posix_spawn("/bin/true", ["true"], {})
    return os.waitpid(pid, 0)[1]

@act("fork_exec")
def _():
    r, w = os.pipe()
    pid = _posixsubprocess.fork_exec(
        [b"/bin/true"], [b"/bin/true"], True, (w,), None, None, -1, -1, -1, -1, -1, -1,
        r, w, False, False, -1, None, None, None, -1, None, False)
    os.close(w)
    failed = os.read(r, 200)
    os.waitpid(pid, 0)
    if failed:
        raise OSError(failed.decode(errors="replace"))
    return pid

@act("fork")
def _():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    return os.waitpid(pid, 0)[1]

@act("ctypes_system")
def _():
    libc = ctypes.CDLL(None, use_errno=True)
    rc = libc.system(b"true")
    if rc != 0:
        raise OSError(ctypes.get_errno(), "system() failed")
    return rc

@act("thread")
def _():
    box = []
    th = threading.Thread(target=box.append, args=(1,))
    th.start()
    th.join()
    return box

@act("scratch_write")
def _():
    path = os.path.join(t["scratch"], "sub", "f.txt")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write("hello")
    os.rename(path, path + ".2")
    return open(path + ".2").read()

@act("stdlib_read")
def _():
    import os as mod
    return len(open(mod.__file__).read()) > 0 and xml.dom.minidom.parseString("<a/>").toxml()

@act("devices")
def _():
    open("/dev/null", "w").write("x")
    return len(open("/dev/urandom", "rb").read(8)) + len(os.urandom(8))

@act("memory")
def _():
    return len(bytearray(1 << 30))

@act("uid")
def _():
    return os.getuid()

print(json.dumps(out), flush=True)
'''


def _need(*names: str) -> None:
    found = probe()
    for name in names:
        if found[name] != AVAILABLE:
            pytest.skip(f"layer {name!r} is {found[name]}")


def _sandbox_python() -> str | None:
    """An interpreter the sandbox user can run (the dev venv's may live under /root)."""
    user = layers.sandbox_user()
    if user is None:
        return None
    for candidate in (sys.executable, "/usr/bin/python3"):
        if os.path.exists(candidate) and outer_layer._reachable(
                candidate, user.pw_uid, user.pw_gid, os.R_OK | os.X_OK):
            return candidate
    return None


@attrs.frozen
class Run:
    applied: list[str]
    results: dict[str, list[Any]]
    outer: list[str]
    warnings: list[str]
    argv: list[str]
    targets: dict[str, Any]

    def escaped(self) -> list[str]:
        """Files the hostile writes created on the host."""
        return [self.targets[k] for k in ("tmp_file", "root_file", "planted_file")
                if os.path.exists(self.targets[k])]

    def failed(self, action: str) -> bool:
        return bool(self.results[action][0] != "ok")

    def errno(self, action: str) -> Any:
        return self.results[action][1]


class Lab:
    """World-readable driver dir, a private "backend" dir, listeners on the host."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="dihya-lab-", dir="/tmp"))
        self.root.chmod(0o755)
        self.driver = self.root / "driver.py"
        self.driver.write_text(DRIVER)
        self.driver.chmod(0o644)
        # copies of the packages the driver imports, readable by the sandbox user wherever
        # the venv lives (tox keeps its envs in a 0700 directory)
        self.libs = self.root / "lib"
        for package in (Path(attrs.__file__).parent, Path(attr.__file__).parent):
            shutil.copytree(package, self.libs / package.name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        # `confine` needs only the standard library, attrs and the reason codes: ship it alone
        (self.libs / "dihya" / "sandbox").mkdir(parents=True)
        (self.libs / "dihya" / "__init__.py").write_text("")
        shutil.copy(Path(dihya.__file__).with_name("reasons.py"), self.libs / "dihya")
        (self.libs / "dihya" / "sandbox" / "__init__.py").write_text("")
        for module in ("policy.py", "inner.py"):
            shutil.copy(Path(layers.__file__).with_name(module),
                        self.libs / "dihya" / "sandbox" / module)
        for path in [self.libs, *self.libs.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        # 0700, and not under /tmp, which bwrap would hide anyway: Landlock must deny it
        self.backend = Path(tempfile.mkdtemp(
            prefix="dihya-backend-", dir="/var/tmp" if os.path.isdir("/var/tmp") else None))
        (self.backend / "dihya.toml").write_text(f'secret = "{SECRET}"\n')
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.tcp.settimeout(0)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp.settimeout(0)
        self.abstract = f"dihya-lab-{uuid.uuid4().hex}"
        self.unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.unix.bind("\0" + self.abstract)
        self.unix.listen()
        self.unix.settimeout(0)
        # a pathname socket outside every read-only path, like a database's in /run
        self.unix_path = str(self.backend / "service.sock")
        self.unix_file = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.unix_file.bind(self.unix_path)
        os.chmod(self.backend, 0o755)  # reachable by the sandbox user: only walls may stop it
        os.chmod(self.unix_path, 0o777)
        (self.backend / "dihya.toml").chmod(0o600)
        self.unix_file.listen()
        self.unix_file.settimeout(0)
        self.scratches: list[str] = []
        self.cache: dict[str, Run] = {}
        self.leftovers: list[str] = []

    def close(self) -> None:
        for sock in (self.tcp, self.udp, self.unix, self.unix_file):
            sock.close()
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.backend, ignore_errors=True)
        for scratch in self.scratches:
            shutil.rmtree(scratch, ignore_errors=True)
        for path in self.leftovers:  # what outer-only runs (no Landlock) could write
            if os.path.exists(path):
                os.unlink(path)

    def policy(self, **overrides: Any) -> SandboxPolicy:
        scratch = tempfile.mkdtemp(prefix="dihya-sbx-test-", dir="/tmp")
        self.scratches.append(scratch)
        core = str(Path(dihya.__file__).resolve().parent.parent)
        roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                 str(Path(attrs.__file__).resolve().parent.parent), core, str(self.root),
                 "/usr/lib/python3", "/usr/lib/python3.11"}
        return SandboxPolicy(scratch_dir=scratch, read_only_paths=tuple(sorted(roots)),
                             **overrides)

    def start(self, python: str, policy: SandboxPolicy, stages: tuple[str, ...],
              sleep: bool = False) -> tuple[subprocess.Popen[str], list[str], list[str],
                                            list[str], dict[str, Any]]:
        targets = {"tcp_port": self.tcp.getsockname()[1],
                   "udp_port": self.udp.getsockname()[1], "abstract": self.abstract,
                   "tmp_file": f"/tmp/dihya-sbx-escape-{uuid.uuid4().hex}",
                   "root_file": f"/root/dihya-sbx-escape-{uuid.uuid4().hex}",
                   "planted_file": str(self.backend / f"planted-{uuid.uuid4().hex}"),
                   "backend_dir": str(self.backend), "parent_pid": os.getpid(),
                   "unix_path": self.unix_path,
                   "scratch": policy.scratch_dir}
        self.leftovers += [targets["tmp_file"], targets["root_file"], targets["planted_file"]]
        cfg = {
            "paths": [str(self.libs)],
            "policy": attrs.asdict(policy), "stages": list(stages), "sleep": sleep,
            "targets": targets,
        }
        argv, env, kwargs, outer, warnings = launch(
            [python, "-I", str(self.driver), json.dumps(cfg)], policy)
        proc = subprocess.Popen(argv, env=env, cwd=policy.scratch_dir, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                close_fds=True, start_new_session=True, **kwargs)
        return proc, outer, warnings, argv, targets

    def run(self, key: str, python: str, stages: tuple[str, ...], **overrides: Any) -> Run:
        if key not in self.cache:
            policy = self.policy(**overrides)
            os.environ["DIHYA_SECRET"] = SECRET
            try:
                proc, outer, warnings, argv, targets = self.start(python, policy, stages)
            finally:
                del os.environ["DIHYA_SECRET"]
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, f"driver failed ({proc.returncode}): {err[-3000:]}"
            data = json.loads(out.strip().splitlines()[-1])
            self.cache[key] = Run(data["applied"], data["results"], outer, warnings, argv,
                                  targets)
        return self.cache[key]

    def host_received_nothing(self, pathname: bool = True) -> bool:
        """Nothing reached the host's listeners; `pathname=False` drains (and ignores) the
        pathname unix socket, which only a view or seccomp keeps out of reach."""
        if not pathname:
            while True:
                try:
                    self.unix_file.accept()[0].close()
                except BlockingIOError:
                    break
        for sock, call in ((self.tcp, "accept"), (self.udp, "recv"), (self.unix, "accept"),
                           (self.unix_file, "accept")):
            try:
                getattr(sock, call)(*([100] if call == "recv" else []))
            except BlockingIOError:
                continue
            return False
        return True


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    lab = Lab()
    try:
        yield lab
    finally:
        lab.close()


# The configurations a driver runs under: (key, stages, policy overrides, layers needed).
# `stages` is ("confined",) when the driver applies the inner layers, () for walls alone.
# Without bubblewrap's view a root backend's worker runs as root unless the sandbox user
# can reach the interpreter: those configurations allow it, to try the other layers alone.
CONFINED = ("confined",)
ROOT_OK = {"allow_root": True}
SECCOMP_CONFIGS = [
    pytest.param("all-layers", CONFINED, {}, id="all-layers"),
    pytest.param("inner-only", CONFINED, {"outer": "none", **ROOT_OK}, id="inner-only"),
]
NETWORK_CONFIGS = [
    pytest.param("all-layers", CONFINED, {}, ("bwrap",), id="all-layers"),
    pytest.param("bwrap-only", (), {"outer": "bwrap"}, ("bwrap",), id="bwrap-only"),
    pytest.param("unshare-only", (), {"outer": "unshare", **ROOT_OK}, ("unshare",),
                 id="unshare-only"),
    pytest.param("inner-only", CONFINED, {"outer": "none", **ROOT_OK},
                 ("seccomp",), id="seccomp-only-net"),
]


def test_probe_reports_every_layer() -> None:
    found = probe()
    assert set(found) == {"user", "bwrap", "unshare", "rlimits", "landlock", "seccomp", "env"}
    for name, state in found.items():
        assert state == AVAILABLE or state.startswith("unavailable: "), (name, state)
    assert probe() is found  # cached


def test_launch_scrubs_env_and_adds_pycache_prefix(lab: Lab) -> None:
    policy = lab.policy()
    argv, env, kwargs, outer, _ = launch([sys.executable, "-I", "-c", "pass"], policy)
    assert env == {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
                   "HOME": policy.scratch_dir, "TMPDIR": policy.scratch_dir}
    i = argv.index(sys.executable)
    # -S: `site` never runs, so no .pth file or sitecustomize does
    assert argv[i + 1:i + 4] == ["-S", "-X", f"pycache_prefix={policy.scratch_dir}/pycache"]
    assert argv[i + 4:] == ["-I", "-c", "pass"]
    assert set(kwargs) <= {"user", "group", "extra_groups", "umask"}
    assert outer[0] == "env"
    # already there (as the executor passes it): not added twice
    again, *_ = launch([sys.executable, "-I", "-X", "pycache_prefix=/x", "-c", "pass"], policy)
    assert again.count("-X") == 1


def test_policy_round_trips_through_json(lab: Lab) -> None:
    policy = lab.policy()
    assert SandboxPolicy(**json.loads(json.dumps(attrs.asdict(policy)))) == policy


@pytest.mark.parametrize(("key", "stages", "overrides"), SECCOMP_CONFIGS)
class TestAfterSeccomp:
    @pytest.fixture
    def run(self, lab: Lab, key: str, stages: tuple[str, ...],
            overrides: dict[str, Any]) -> Run:
        _need("seccomp", "landlock")
        if key == "all-layers":
            _need("bwrap")
        return lab.run(key, sys.executable, stages, **overrides)

    def test_layers_reported(self, run: Run) -> None:
        assert "seccomp" in run.applied and "rlimits" in run.applied
        assert any(a.startswith("landlock") for a in run.applied)

    @pytest.mark.parametrize("action", ["tcp", "udp", "udp_external", "abstract_unix",
                                        "unix_pathname", "socketpair"])
    def test_sockets_denied_with_eperm(self, run: Run, lab: Lab, action: str) -> None:
        assert run.results[action] == ["PermissionError", 1]
        assert lab.host_received_nothing()

    @pytest.mark.parametrize("action", ["subprocess_run", "posix_spawn", "fork_exec", "fork",
                                        "ctypes_system"])
    def test_no_new_process(self, run: Run, action: str) -> None:
        assert run.results[action][0] == "PermissionError", run.results[action]
        assert run.errno(action) == 1

    def test_os_system_fails(self, run: Run) -> None:
        # glibc's system() reports a failed spawn as exit status 127
        assert run.results["os_system"][0] == "ok"
        assert run.results["os_system"][1] != "0"

    def test_threads_still_work(self, run: Run) -> None:
        assert run.results["thread"] == ["ok", "[1]"]

    def test_allowed_work_still_works(self, run: Run) -> None:
        assert run.results["scratch_write"] == ["ok", "'hello'"]
        assert run.results["stdlib_read"] == ["ok", repr('<?xml version="1.0" ?><a/>')]
        assert run.results["devices"] == ["ok", "16"]


@pytest.mark.parametrize(("key", "stages", "overrides"), [
    *SECCOMP_CONFIGS,
    pytest.param("unshare-confined", CONFINED, {"outer": "unshare", **ROOT_OK},
                 id="unshare+confined"),
])
class TestFilesystemAndLimits:
    @pytest.fixture
    def run(self, lab: Lab, key: str, stages: tuple[str, ...],
            overrides: dict[str, Any]) -> Run:
        _need("landlock")
        if overrides.get("outer") in ("bwrap", "unshare"):
            _need(overrides["outer"])
        return lab.run(key, sys.executable, stages, **overrides)

    @pytest.mark.parametrize("action", ["write_tmp", "write_root", "write_backend_dir"])
    def test_writes_outside_scratch_denied(self, run: Run, lab: Lab, action: str) -> None:
        # EACCES from Landlock, EROFS from bwrap's read-only root, or ENOENT: the
        # directory is not in bwrap's view at all
        assert run.results[action] in (["PermissionError", 13], ["OSError", 30],
                                       ["FileNotFoundError", 2])
        assert not run.escaped()

    @pytest.mark.parametrize("action", ["read_backend_config", "read_shadow",
                                        "read_parent_environ"])
    def test_reads_outside_read_only_paths_denied(self, run: Run, action: str) -> None:
        expected = [["PermissionError", 13]]
        if "bwrap" in run.outer:
            # not in the view (another pid namespace, for the parent's /proc entry)
            expected = [["FileNotFoundError", 2]]
        assert run.results[action] in expected, run.results[action]

    def test_secret_env_absent(self, run: Run) -> None:
        assert run.results["env_secret"] == ["ok", "None"]
        names = json.loads(run.results["environ"][1].replace("'", '"'))
        assert set(names) <= {"PATH", "LANG", "LC_ALL", "HOME", "TMPDIR", "PWD"}

    def test_exec_denied_before_seccomp_too(self, run: Run) -> None:
        # Landlock handles the execute right and grants it nowhere
        assert run.failed("subprocess_run")

    def test_memory_limit(self, run: Run) -> None:
        assert run.results["memory"] == ["MemoryError", None]

    def test_signal_to_backend_denied(self, run: Run) -> None:
        # another pid namespace (bwrap), Landlock's signal scope (ABI 6) or seccomp
        if "bwrap" not in run.outer and layers.landlock_abi() < 6:
            pytest.skip("Landlock ABI < 6 has no signal scope and there is no pid namespace")
        assert run.failed("signal_parent")

    def test_scratch_and_stdlib_work(self, run: Run) -> None:
        assert run.results["scratch_write"] == ["ok", "'hello'"]
        assert run.results["stdlib_read"][0] == "ok"


@pytest.mark.parametrize(("key", "stages", "overrides", "needs"), NETWORK_CONFIGS)
def test_network_unreachable(lab: Lab, key: str, stages: tuple[str, ...],
                             overrides: dict[str, Any], needs: tuple[str, ...]) -> None:
    _need(*needs)
    run = lab.run(key, sys.executable, stages, **overrides)
    for action in ("tcp", "udp_external", "abstract_unix"):
        assert run.failed(action), (action, run.results[action])
    # a datagram to 127.0.0.1 may be "sent" (bwrap brings up the namespace's own
    # loopback) but never reaches the host's socket. unshare alone has no mount namespace:
    # a host pathname socket stays reachable until seccomp (the inner layers) denies it
    walls_only = key == "unshare-only"
    assert run.failed("unix_pathname") or walls_only
    assert lab.host_received_nothing(pathname=not walls_only)
    if not stages:  # outer layer alone: no route, or nobody listening in the namespace
        assert run.errno("tcp") in (101, 111)  # ENETUNREACH, ECONNREFUSED
        assert run.errno("udp_external") == 101
        assert run.errno("abstract_unix") == 111


@pytest.mark.parametrize("outer", ["bwrap", "unshare"])
def test_outer_layer_alone_scrubs_env(lab: Lab, outer: str) -> None:
    _need(outer)
    run = lab.run(f"{outer}-only", sys.executable, (), outer=outer,
                  **(ROOT_OK if outer == "unshare" else {}))
    assert run.results["env_secret"] == ["ok", "None"]
    assert outer in run.outer


def test_bwrap_view_is_read_only(lab: Lab) -> None:
    _need("bwrap")
    run = lab.run("bwrap-only", sys.executable, (), outer="bwrap")
    # without Landlock: the view's root is read-only and the host's /tmp is not in it
    assert run.failed("write_tmp") and run.failed("write_root")
    assert not run.escaped()


def test_unprivileged_user_in_a_minimal_view(lab: Lab) -> None:
    """As root, with this (possibly /root-installed) interpreter: the worker runs as the
    sandbox user inside a view that holds no host /run, /var, /home or /etc."""
    _need("user", "bwrap", "landlock", "seccomp")
    run = lab.run("user-view", sys.executable, ("confined",), outer="bwrap")
    user = layers.sandbox_user()
    assert user is not None
    assert f"user:{user.pw_name}" in run.outer
    assert run.results["uid"] == ["ok", str(user.pw_uid)]
    assert run.results["root_listing"] == ["PermissionError", 13]  # Landlock, on top
    for action in ("tcp", "udp", "udp_external", "unix_pathname", "fork", "subprocess_run"):
        assert run.results[action][0] == "PermissionError", action
    for action in ("read_backend_config", "read_shadow", "write_root", "write_tmp"):
        assert run.results[action] in (["FileNotFoundError", 2], ["PermissionError", 13],
                                       ["OSError", 30]), action
    assert run.results["thread"] == ["ok", "[1]"]
    assert run.results["scratch_write"] == ["ok", "'hello'"]
    assert run.results["memory"] == ["MemoryError", None]
    assert lab.host_received_nothing()


def test_the_view_alone_hides_host_sockets(lab: Lab) -> None:
    """bwrap without the inner layers: a database's pathname socket cannot even be named."""
    _need("bwrap")
    run = lab.run("bwrap-only", sys.executable, (), outer="bwrap")
    assert run.results["unix_pathname"] == ["FileNotFoundError", 2]
    assert lab.host_received_nothing()
    listing = set(json.loads(run.results["root_listing"][1].replace("'", '"')))
    assert not listing & {"run", "var", "home", "srv", "mnt", "media", "opt", "boot", "sys"}
    assert {"usr", "proc", "dev"} <= listing


def test_unprivileged_user_without_bwrap(lab: Lab) -> None:
    """unshare and Popen(user=...): needs an interpreter the sandbox user can reach."""
    _need("user", "unshare", "landlock", "seccomp")
    python = _sandbox_python()
    if python is None:
        pytest.skip("no interpreter the sandbox user can reach (both under a 0700 dir)")
    run = lab.run("user-unshare", python, ("confined",), outer="unshare")
    user = layers.sandbox_user()
    assert user is not None and f"user:{user.pw_name}" in run.outer
    assert run.results["uid"] == ["ok", str(user.pw_uid)]
    assert run.results["unix_pathname"] == ["PermissionError", 1]
    assert lab.host_received_nothing()


def test_root_worker_refused_unless_allowed(lab: Lab) -> None:
    user = layers.sandbox_user()
    if os.geteuid() != 0 or user is None:
        pytest.skip("needs a root backend and a sandbox user")
    if outer_layer._reachable(sys.executable, user.pw_uid, user.pw_gid, os.R_OK | os.X_OK):
        pytest.skip("the sandbox user can reach this interpreter without a view")
    # no bwrap view: the sandbox user cannot reach the interpreter, so the worker would be root
    with pytest.raises(SandboxSetupError, match="would run as root"):
        launch([sys.executable, "-c", "pass"], lab.policy(outer="none"))
    _, _, kwargs, outer, warnings = launch([sys.executable, "-c", "pass"],
                                           lab.policy(outer="none", allow_root=True))
    assert "user" not in kwargs and "user:root" in outer
    assert any("runs as root" in w and "allow_root" in w for w in warnings)


@pytest.mark.parametrize("outer", ["bwrap", "unshare"])
def test_killing_the_launched_process_kills_the_worker(lab: Lab, outer: str) -> None:
    _need(outer, "landlock", "seccomp")
    policy = lab.policy(outer=outer, **(ROOT_OK if outer == "unshare" else {}))
    proc, *_ = lab.start(sys.executable, policy, CONFINED, sleep=True)
    try:
        assert proc.stdout is not None
        assert "seccomp" in json.loads(proc.stdout.readline())["applied"]
        token = policy.scratch_dir.encode()
        assert _processes_with(token)
        os.killpg(proc.pid, signal.SIGKILL)  # as the executor does
        proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        while _processes_with(token) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _processes_with(token)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def _processes_with(token: bytes) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    if token in fh.read():
                        found.append(int(entry))
            except OSError:
                continue
    return found


def test_confine_refuses_a_multithreaded_worker(lab: Lab) -> None:
    _need("landlock")
    policy = lab.policy()
    code = ("import sys, threading, time, json; sys.path[:0] = json.loads(sys.argv[1]);"
            "from dihya.sandbox.layers import SandboxPolicy, confine, SandboxSetupError;"
            "threading.Thread(target=time.sleep, args=(2,), daemon=True).start();"
            "p = SandboxPolicy(**json.loads(sys.argv[2]))\n"
            "try: confine(p)\n"
            "except SandboxSetupError as e: print('refused:', e)")
    paths = [str(Path(attrs.__file__).resolve().parent.parent),
             str(Path(dihya.__file__).resolve().parent.parent)]
    done = subprocess.run([sys.executable, "-I", "-c", code, json.dumps(paths),
                           json.dumps(attrs.asdict(policy))],
                          capture_output=True, text=True, timeout=30, check=True)
    assert done.stdout.startswith("refused: "), done.stdout + done.stderr
