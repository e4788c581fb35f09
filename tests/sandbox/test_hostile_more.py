"""More of the hostile corpus: attacks on the backend's side of the channel, on the
worker's limits and on its neighbours, each by a real plugin installed from a wheel and run
in a real worker.

Each test says what the attack is and what must happen. The backend must never wait on a
worker without a deadline: a worker that stops reading its requests is a worker that
overran (`timeout`), whatever size the request has.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

import pytest
from sandbox_support import hook, sandboxed, statuses

from dihya.pipeline import run_generation
from dihya.sandbox.layers import probe
from support.wheels import plugin_source

# A file big enough that the request carrying it cannot sit in a pipe's buffer (64 KiB by
# default; the attack below shrinks its own to one page).
PADDING = hook('code["padding.txt"] = "p" * (256 * 1024)\nreturn code')


def _need(*layers: str) -> None:
    missing = [(n, probe()[n]) for n in layers if probe()[n] != "available"]
    if missing:
        pytest.skip(f"layers unavailable here: {missing}")


def _finishes(fn: Callable[[], Any], deadline_s: float, on_hang: Callable[[], None]) -> Any:
    """Run `fn` in a thread; if it has not returned after `deadline_s` (a generous bound,
    far above any timeout involved), call `on_hang` (which must unblock it) and fail."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # reported below
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(deadline_s)
    if thread.is_alive():
        on_hang()
        thread.join(30)
        pytest.fail(f"the backend still waited on the worker after {deadline_s} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _kill_workers(snap: Any) -> Callable[[], None]:
    def kill() -> None:
        for pid in snap.sandbox.running().values():
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
    return kill


# -- the channel: a worker that stops reading -----------------------------------------------

# At import, the plugin shrinks the pipe its requests come through to one page and puts a
# pipe nobody writes to in place of its stdin: the worker's loop then waits there forever,
# and the backend's next request (a generation's code, far over one page) fills the real
# pipe. Before the fix the backend blocked in write(2), with no deadline, holding the
# worker's lock: that generation, and every later one that ran the plugin, hung (and a
# threaded server's heartbeat kept the server worker "alive").
STALL_AT_IMPORT = """#!full
import fcntl, os
F_SETPIPE_SZ = 1031
try:
    fcntl.fcntl(0, F_SETPIPE_SZ, 4096)
except OSError:
    pass
_r, _w = os.pipe()
os.dup2(_r, 0)
""" + plugin_source("NAME", priority=200)

# The same from a hook: it answers its first call, then stops reading.
STALL_AFTER_ANSWER = plugin_source("NAME", priority=200, body='''
def after_generation(self, code, needs):
    import fcntl, os
    try:
        fcntl.fcntl(0, 1031, 4096)
    except OSError:
        pass
    r, w = os.pipe()
    os.dup2(r, 0)
    code["stalled.txt"] = "from now on, no request is read"
    return code
''')


@pytest.mark.parametrize("when", ["import", "after-an-answer"])
def test_a_worker_that_stops_reading_times_out(plugin_site, needs, closing, when) -> None:
    source = STALL_AT_IMPORT if when == "import" else "#!full\n" + STALL_AFTER_ANSWER
    snap, names = sandboxed(plugin_site, {"padding": "#!full\n" + plugin_source(
        "NAME", priority=10, body=PADDING), "stall": source}, timeout=1.5)
    closing(snap)
    stall = names["stall"]
    assert snap.get(stall).active, snap.get(stall).message
    if when == "after-an-answer":
        first = run_generation(needs, snap)
        assert statuses(first)[stall] == "ok" and "stalled.txt" in first.files
    # the killed worker is replaced at the next call: one loaded from the import stalls at
    # once, the other answers once more and then stalls again
    expected = ["timeout", "timeout"] if when == "import" else ["timeout", "ok", "timeout"]
    for status in expected:  # a later generation must not wait on a stuck call's lock
        result = _finishes(lambda: run_generation(needs, snap), 60.0, _kill_workers(snap))
        assert statuses(result)[stall] == status, statuses(result)
        assert statuses(result)[names["padding"]] == "ok"
        assert result.files["padding.txt"].startswith("ppp")


def test_closing_a_worker_that_stops_reading_does_not_hang(plugin_site, needs,
                                                            closing) -> None:
    # the worker reads nothing and its stdin pipe is full: `close` must not block on the
    # shutdown frame (reaping, reloads and shutdown all close workers)
    snap, names = sandboxed(plugin_site, {"stall": STALL_AT_IMPORT}, timeout=1.5)
    stall = names["stall"]
    assert snap.get(stall).active, snap.get(stall).message
    worker = snap.sandbox.worker(stall)
    assert worker.proc is not None and worker.proc.stdin is not None
    # fill the worker's (shrunk) stdin pipe as a request that was never read would
    fd = worker.proc.stdin.fileno()
    assert not os.get_blocking(fd), "requests must be written with a deadline"
    try:
        while True:
            os.write(fd, b"x" * 4096)
    except BlockingIOError:
        pass
    _finishes(snap.close, 60.0, _kill_workers(snap))
    assert snap.sandbox.running() == {}


# -- the channel: an answer that never completes ----------------------------------------------

DRIP = plugin_source("NAME", body='''
def after_generation(self, code, needs):
    import os, stat, struct, time
    out = [fd for fd in range(3, 64) if _pipe(fd)][-1]
    os.write(out, struct.pack(">I", 16 * 1024 * 1024 - 1))  # a huge frame announced...
    while True:                                              # ...and dripped, forever
        os.write(out, b" ")
        time.sleep(0.05)
''')
DRIP_SOURCE = ("#!full\nimport os, stat\n"
               "def _pipe(fd):\n    try:\n        return stat.S_ISFIFO(os.fstat(fd).st_mode)\n"
               "    except OSError:\n        return False\n" + DRIP)


def test_a_slow_drip_answer_is_a_timeout(plugin_site, needs, closing) -> None:
    snap, names = sandboxed(plugin_site, {"drip": DRIP_SOURCE}, timeout=1.5)
    closing(snap)
    result = _finishes(lambda: run_generation(needs, snap), 60.0, _kill_workers(snap))
    assert statuses(result)[names["drip"]] == "timeout"


# -- limits and neighbours -------------------------------------------------------------------

NEIGHBOUR = hook('import os\ncode["pid.txt"] = str(os.getpid())\nreturn code')

PROBE = plugin_source("NAME", priority=200, body='''
def after_generation(self, code, needs):
    import json, os, resource, signal
    found = {}

    def attempt(name, fn):
        try:
            found[name] = ["ok", repr(fn())]
        except BaseException as exc:
            found[name] = [type(exc).__name__, getattr(exc, "errno", None)]

    for which in ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_NOFILE", "RLIMIT_NPROC",
                  "RLIMIT_FSIZE", "RLIMIT_CORE"):
        number = getattr(resource, which)
        soft, hard = resource.getrlimit(number)
        up = resource.RLIM_INFINITY
        attempt("raise:" + which, lambda: resource.setrlimit(number, (up, up)))
        found["limit:" + which] = list(resource.getrlimit(number))
    # signal 0: permission checks without a signal sent
    for pid in needs_pids:
        attempt(f"signal:{pid}", lambda pid=pid: os.kill(pid, 0))
    attempt("signal:-1", lambda: os.kill(-1, 0))
    attempt("signal:ppid", lambda: os.kill(os.getppid(), 0))
    attempt("signal:pgrp", lambda: os.killpg(os.getpgrp(), 0))
    for path in ("/dev/shm", "/proc/1/environ", "/proc/1/root/", "/proc/1/cwd/",
                 f"/proc/{os.getppid()}/mem", "/proc/self/mountinfo"):
        attempt("read:" + path, lambda path=path: (os.listdir(path) if path.endswith("/")
                                                    else open(path, "rb").read(64)))
    attempt("write:/dev/shm", lambda: open("/dev/shm/dihya-escape", "w").write("x"))
    attempt("mkfifo", lambda: os.mkfifo(os.path.join(os.environ["TMPDIR"], "fifo")))
    attempt("symlink-out", lambda: os.symlink("/etc/passwd",
                                              os.path.join(os.environ["TMPDIR"], "ln")))
    attempt("read-through-link", lambda: open(os.path.join(os.environ["TMPDIR"],
                                                           "ln")).read(10))
    code["probe.json"] = json.dumps(found)
    return code
''')


def test_limits_signals_and_proc_of_others(plugin_site, needs, closing) -> None:
    """The plugin tries to raise every limit back, to signal its neighbours (another
    plugin's live worker and the backend, by their host pids, every process it could see,
    its own group), to read `/proc` of its parents and to use `/dev/shm` and a link out of
    its scratch dir."""
    _need("seccomp", "landlock")
    first, names = sandboxed(plugin_site, {"neighbour": NEIGHBOUR}, timeout=5.0)
    closing(first)
    neighbour = first.sandbox.worker(names["neighbour"])
    assert neighbour.proc is not None
    targets = [os.getpid(), neighbour.proc.pid]
    snap, probe_names = sandboxed(plugin_site, {
        "probe": "#!full\nneeds_pids = " + repr(targets) + "\n" + PROBE}, timeout=5.0)
    closing(snap)
    name = probe_names["probe"]
    result = run_generation(needs, snap)
    assert statuses(result)[name] == "ok", result.plugins
    found = json.loads(result.files["probe.json"])
    for key, value in found.items():
        if key.startswith("raise:"):  # soft = hard, and no CAP_SYS_RESOURCE
            assert value[0] in ("ValueError", "PermissionError"), (key, value)
    for pid in targets:
        # not in its PID namespace (ESRCH), or Landlock's signal scope / another uid (EPERM)
        assert found[f"signal:{pid}"][0] in ("ProcessLookupError", "PermissionError"), found
    assert found["signal:ppid"][0] != "ok" or probe()["bwrap"] == "available", found
    # kill(-1) and killpg(own group) reach at most the worker's own namespace: the
    # neighbour and the backend are still there
    assert neighbour.alive
    for key in ("read:/proc/1/environ", "read:/proc/1/root/", "read:/proc/1/cwd/",
                "write:/dev/shm", "read-through-link"):
        assert found[key][0] != "ok", (key, found[key])
    assert not os.path.exists("/dev/shm/dihya-escape")


# -- code at interpreter start ----------------------------------------------------------------

@pytest.fixture
def sitecustomize_in_site_packages() -> Any:
    """A `sitecustomize.py` in this interpreter's site-packages, as a distribution could
    ship one (harmless: it sets an attribute on `sys`); `site` imports it at every start."""
    import sysconfig
    from pathlib import Path

    site = Path(sysconfig.get_paths()["purelib"])
    target = site / "sitecustomize.py"
    if target.exists():
        pytest.skip(f"{target} exists already")
    try:
        target.write_text("import sys\nsys.dihya_test_sitecustomize_ran = True\n")
    except OSError as exc:
        pytest.skip(f"cannot write into {site}: {exc}")
    try:
        yield target
    finally:
        target.unlink()


SITECUSTOMIZE_PROBE = plugin_source("NAME", body='''
def after_generation(self, code, needs):
    import sys
    code["start.txt"] = repr((hasattr(sys, "dihya_test_sitecustomize_ran"),
                              "sitecustomize" in sys.modules, "site" in sys.modules))
    return code
''')


def test_no_sitecustomize_runs_in_a_worker(plugin_site, needs, closing,
                                           sitecustomize_in_site_packages) -> None:
    """The threat model promises that a worker starts without `site`: neither `.pth`
    lines (tested in test_import_time.py) nor `sitecustomize` run in it."""
    import subprocess
    import sys

    # the planted module does run in a plain interpreter of this environment
    plain = subprocess.run([sys.executable, "-c", "import sys; print(hasattr(sys, "
                            "'dihya_test_sitecustomize_ran'))"], capture_output=True, text=True,
                           check=True)
    assert plain.stdout.strip() == "True"
    snap, names = sandboxed(plugin_site, {"probe": "#!full\n" + SITECUSTOMIZE_PROBE})
    closing(snap)
    result = run_generation(needs, snap)
    assert statuses(result)[names["probe"]] == "ok", result.plugins
    assert result.files["start.txt"] == repr((False, False, False))


# -- require_isolation on a machine without an inner layer ------------------------------------

# A backend process in which Landlock does not exist (`landlock_create_ruleset` answers
# ENOSYS, as on a kernel older than 5.13): a real seccomp filter installed in it before the
# core is imported, inherited by every worker it starts. It builds a registry with one
# sandboxed plugin and prints what the record says.
NO_LANDLOCK_BACKEND = r'''
import ctypes, json, sys
args = json.loads(sys.argv[1])
sys.path[:0] = args["path"]
lib = ctypes.CDLL("libseccomp.so.2")
lib.seccomp_init.restype = ctypes.c_void_p
lib.seccomp_init.argtypes = [ctypes.c_uint32]
lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
lib.seccomp_load.argtypes = [ctypes.c_void_p]
ctx = lib.seccomp_init(0x7FFF0000)  # allow everything...
number = lib.seccomp_syscall_resolve_name(b"landlock_create_ruleset")
assert number > 0 and lib.seccomp_rule_add(ctx, 0x00050000 | 38, number, 0) == 0  # ...but: ENOSYS
assert lib.seccomp_load(ctx) == 0
import attrs
from pathlib import Path
from dihya.config import AllowEntry, Config
from dihya.registry import build_registry
from dihya.sandbox.layers import probe
entry = AllowEntry(**args["entry"])
config = Config(path=Path(args["config"]), exists=False, hook_timeout_s=5.0, allow=(entry,))
config = attrs.evolve(config, sandbox=attrs.evolve(config.sandbox,
                                                   require_isolation=args["require"]))
snap = build_registry(config, path=args["path"])
record = snap.get(entry.name)
print(json.dumps({"probe": probe()["landlock"], "status": record.status,
                  "reason": record.reason, "message": record.message,
                  "warnings": list(record.warnings), "isolation": list(record.isolation)}))
snap.close()
'''


@pytest.mark.parametrize("require", [False, True])
def test_a_missing_inner_layer_is_a_warning_and_require_isolation_refuses(
        plugin_site, tmp_path, require) -> None:
    """The threat model: a layer this machine does not allow is skipped and reported in
    the plugin's `warnings`, and `[sandbox] require_isolation = true` refuses to run with
    any warning. Before, only the outer layers (bwrap, unshare) were reported: a worker
    without Landlock (or seccomp) was `active` with no warning, require_isolation or not."""
    import subprocess
    import sys

    _need("seccomp", "landlock")
    name = plugin_site.unique("nolandlock")
    plugin_site.install(name)
    entry = plugin_site.entry(name, mode="sandbox")
    args = {"path": plugin_site.path, "require": require, "config": str(tmp_path / "d.toml"),
            "entry": {k: getattr(entry, k) for k in ("name", "distribution", "version",
                                                     "fingerprint", "mode")}}
    done = subprocess.run([sys.executable, "-c", NO_LANDLOCK_BACKEND, json.dumps(args)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["probe"].startswith("unavailable"), found
    assert not any(layer.startswith("landlock") for layer in found["isolation"]), found
    if require:
        assert (found["status"], found["reason"]) == ("failed", "sandbox-start-failed"), found
        assert "Landlock" in found["message"], found
    else:
        assert found["status"] == "active", found
        assert any("Landlock" in w for w in found["warnings"]), found
