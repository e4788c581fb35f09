"""Run hooks in sandboxed worker processes: one plugin per worker, started lazily, kept warm.

Workers are started with `subprocess.Popen` and `python -I` (never forked from the
backend: a fork inherits its memory and secrets; never `multiprocessing`: its connections
unpickle what the other side sends). The parent enforces each call's deadline, kills a
worker that overruns, crashes, sends an oversized or malformed frame, and starts a fresh
one on the next call. Workers are recycled after `max_calls` and reaped when idle.

Two abuses of that are sandbox abuses (`on_abuse`, `take_abuses`): a worker that exits
between calls without being asked to (every call would pay a worker start), and one that
uses more than `IDLE_CPU_LIMIT_S` of CPU time while idle (a thread left running after the
answer), which is stopped. Each is charged to its plugin once; the HTTP backend counts it
as a failed call toward quarantine (`dihya.store.failures.charge`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import attrs
import msgspec

from dihya.config import SandboxSettings
from dihya.plugin import HOOKS_BY_NAME
from dihya.pluginlog import deliver
from dihya.reasons import DihyaError, HookStatus, Reason
from dihya.sandbox.executor import (
    INVALID_OUTPUT_ERROR,
    HookInvalidOutput,
    HookRaised,
    HookTarget,
    HookTimeout,
    HookUnavailable,
    Remembered,
    SandboxViolation,
    arguments_for,
)
from dihya.sandbox.outer import launch
from dihya.sandbox.policy import SandboxPolicy, SandboxSetupError
from dihya.sandbox.protocol import (
    MAX_FRAME_BYTES,
    FrameTimeout,
    ProtocolError,
    encode_value,
    read_frame,
    write_frame,
)
from dihya.sandbox.scratch import make_scratch, sweep_once
from dihya.sandbox.start import import_path, python_argv, read_only_paths

KILL_GRACE_S: Final = 0.5
#: CPU time (user + system, in seconds: every thread of the worker's interpreter and the
#: children it reaped) a worker may use while idle over its life, measured by the pool's
#: watch thread every IDLE_CHECK_S between two looks at which it was idle with no call in
#: between. A worker that used more is stopped: a sandbox abuse (`BUSY_WHILE_IDLE`).
IDLE_CPU_LIMIT_S: Final = 0.5
#: how often (seconds) the pool's watch thread looks at its idle workers' CPU time
IDLE_CHECK_S: Final = 1.0
#: the reason codes of sandbox abuses (audited as `hook.sandbox-violation`)
EXITED_BETWEEN_CALLS: Final = "exited-between-calls"
BUSY_WHILE_IDLE: Final = "busy-while-idle"
_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
#: how long the worker of a plugin's previous version keeps serving the generations that
#: started before an upgrade was swapped in (a longer one then finds the plugin skipped)
UPGRADE_GRACE_S: Final = 30.0
_WORKER_REASONS: Final = frozenset({Reason.IMPORT_ERROR, Reason.INVALID_PLUGIN,
                                    Reason.SANDBOX_START_FAILED, Reason.FINGERPRINT_MISMATCH,
                                    Reason.SHADOWED_MODULE})


class WorkerFailed(SandboxViolation):
    """The worker died, or broke the protocol; it has been killed."""


class WorkerRetired(WorkerFailed, HookUnavailable):
    """The plugin's worker was retired by a registry rebuild (the plugin was switched off,
    removed or replaced) before this call: a generation under way on the previous snapshot
    skips the plugin's remaining hooks."""

    REASON = HookStatus.SKIPPED

    @classmethod
    def switched_off(cls, name: str) -> WorkerRetired:
        return cls(f"{name} was switched off or replaced during this generation")


class PluginRaised(HookRaised):
    """The hook raised inside the worker; the worker lives on."""


class WorkerStartError(DihyaError):
    """The worker could not load the plugin; `reason` is a status reason code."""


@attrs.frozen
class WorkerSpec:
    """Which plugin a worker loads; `path` adds import-path entries (tests, custom sites);
    `dist_info` is the distribution the backend verified (the worker checks that one only;
    empty: the worker finds it by discovery)."""

    group: str
    name: str
    fingerprint: str
    path: tuple[str, ...] = ()
    dist_info: str = ""


@attrs.frozen
class Hello:
    """What a worker said about its plugin once loaded, and how it is confined."""

    meta: dict[str, Any]
    layers: tuple[str, ...]
    warnings: tuple[str, ...]


class Worker:
    """One running worker process and its plugin; calls are serialised by a lock."""

    def __init__(self, spec: WorkerSpec, settings: SandboxSettings,
                 max_frame_bytes: int = MAX_FRAME_BYTES,
                 spawn: Callable[[Callable[[], Any]], Any] | None = None) -> None:
        self.spec = spec
        # bwrap's --die-with-parent follows the *thread* that started it: start workers
        # from a thread that lives as long as they should (the pool's spawner).
        self._spawn = spawn or (lambda start: start())
        self.settings = settings
        self.max_frame_bytes = max_frame_bytes
        self.lock = threading.Lock()
        self.calls = 0
        self.last_used = time.monotonic()
        self.scratch = make_scratch(spec.name)
        self.proc: subprocess.Popen[bytes] | None = None
        self.retired = False  # set by the pool before it drains and stops this worker
        self.stopping = False  # set when the backend stops it (`kill`, `close`)
        self.charged = False  # a sandbox abuse of this worker was charged to its plugin
        # the watch thread's: the worker interpreter's /proc/<pid>/stat (opened at its first
        # look), (calls, CPU time) at its last look, and the CPU time used while idle
        self._cpu_lock = threading.Lock()
        self._stat_fd: int | None = None
        self._looked: tuple[int, float] | None = None
        self.idle_cpu_s = 0.0
        # requests as deltas (`argument_delta`): whether the worker takes them (its hello
        # says so), and the arguments it holds, as they were last sent in full or rebuilt
        self.deltas = False
        self._held: dict[str, Mapping[str, Any]] = {}
        self._held_serial = 0  # bumped whenever what the worker holds may have changed
        # answers "same" (`remember`): whether the worker may (its hello says so); per hook,
        # (the input it was called with, the frozen answer the pipeline validated); the
        # last call's (hook, input, answer as returned) until the pipeline remembers it
        self.same = False
        self._memos: dict[str, tuple[Any, Any]] = {}
        self._pending: tuple[str, Any, Any] | None = None
        try:
            self.hello = self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> Hello:
        from dihya.sandbox.bytecode import warm_cache

        cache = warm_cache()
        policy = SandboxPolicy(
            scratch_dir=self.scratch,
            read_only_paths=read_only_paths((*self.spec.path, *([cache] if cache else []))),
            address_space_bytes=self.settings.memory_mb * 1024 * 1024,
            scratch_bytes=self.settings.scratch_mb * 1024 * 1024,
            cpu_seconds=self.settings.cpu_seconds, allow_root=self.settings.allow_root)
        payload: dict[str, Any] = {"group": self.spec.group, "name": self.spec.name,
                                   "fingerprint": self.spec.fingerprint,
                                   "dist_info": self.spec.dist_info,
                                   "sys_path": import_path(self.spec.path),
                                   "max_frame_bytes": self.max_frame_bytes,
                                   "policy": attrs.asdict(policy)}
        own = f"pycache_prefix={self.scratch}/pycache"
        try:
            argv, env, kwargs, outer, warnings = launch(
                python_argv(payload, f"{self.scratch}/pycache"), policy)
        except SandboxSetupError as exc:
            raise WorkerStartError(Reason.SANDBOX_START_FAILED, str(exc)) from exc
        if cache is not None and ("bwrap" in outer or "user" in kwargs):
            # the shared cache, where the worker cannot write it: a read-only view, or
            # another user (dihya.sandbox.bytecode)
            argv = [f"pycache_prefix={cache}" if a == own else a for a in argv]
        self.proc = self._spawn(lambda: subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=env, close_fds=True, cwd=self.scratch, start_new_session=True, **kwargs))
        assert self.proc.stdin is not None
        # requests are written with a deadline: a worker may stop reading them (see `call`)
        os.set_blocking(self.proc.stdin.fileno(), False)
        deadline = time.monotonic() + self.settings.start_timeout_s
        try:
            assert self.proc.stdout is not None
            first = read_frame(self.proc.stdout.fileno(), deadline, self.max_frame_bytes)
        except FrameTimeout as exc:
            raise WorkerStartError(Reason.SANDBOX_START_FAILED, "the plugin did not load within "
                                   f"{self.settings.start_timeout_s} s") from exc
        except ProtocolError as exc:
            code = self.proc.poll()
            raise WorkerStartError(Reason.SANDBOX_START_FAILED, f"the worker exited while loading "
                                   f"(exit status {code}): {exc}") from exc
        if not first.get("ok"):
            error = first.get("error") or {}
            reason = str(error.get("reason"))
            if reason not in _WORKER_REASONS:  # what the (untrusted) worker may report
                reason = Reason.SANDBOX_START_FAILED
            raise WorkerStartError(reason, str(error.get("message", "unknown failure"))[:2000])
        meta = first.get("meta")
        if not isinstance(meta, dict):
            raise WorkerStartError(Reason.SANDBOX_START_FAILED, "the worker sent no metadata")
        inner = [str(x) for x in first.get("layers", []) if isinstance(x, str)]
        self.deltas = first.get("deltas") is True
        self.same = first.get("same") is True
        return Hello(meta, tuple(outer + inner), tuple(warnings))

    def cpu_time(self) -> float | None:
        """CPU time (user + system, seconds) the worker's interpreter used so far, all its
        threads and reaped children included; None when it cannot be read (gone)."""
        with self._cpu_lock:
            fd = self._stat_fd
            if fd is None:
                return None
            try:
                text = os.pread(fd, 2048, 0)
            except OSError:
                return None
        # after the command's closing parenthesis: state is field 3, utime field 14
        fields = text[text.rfind(b")") + 2:].split()
        try:
            return sum(int(f) for f in fields[11:15]) / _CLOCK_TICKS
        except ValueError:
            return None

    def watch(self) -> None:
        """Open the worker interpreter's /proc/<pid>/stat for `cpu_time`, once (a walk of
        /proc: the watch thread does it, holding no lock a call needs)."""
        if self._stat_fd is not None or self.stopping or self.proc is None:
            return
        fd = _open_stat(_interpreter_pid(self.proc.pid))
        with self._cpu_lock:
            if self._stat_fd is None and not self.stopping:
                self._stat_fd, fd = fd, None
        if fd is not None:
            os.close(fd)

    def look_idle(self) -> float:
        """Add the CPU time used since the last look to `idle_cpu_s` if no call came in
        between, and return it. Call it holding `lock` (no call under way)."""
        now = self.cpu_time()
        if now is None:
            return self.idle_cpu_s
        if self._looked is not None and self._looked[0] == self.calls:
            self.idle_cpu_s += max(0.0, now - self._looked[1])
        self._looked = (self.calls, now)
        return self.idle_cpu_s

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def call(self, method: str, kwargs: Mapping[str, Any], timeout_s: float,
             target: HookTarget | None = None,
             given: Mapping[str, Any] | None = None, memo: bool = False) -> Any:
        """Call `method` in the worker; what it logged (the answer's `"logs"`) is delivered
        to the plugin log collector under way, as `target`'s (a registry record), with
        `given` (every argument of the hook, default `kwargs`) for its redaction.

        With `memo` (the pipeline's calls, which `remember` what they validated), a hook
        that replaces an argument may be answered `"same"`: when this worker's previous
        call of `method` had exactly this input (`_input_key`) and its answer was
        remembered, the request says `"memo"`, and a `"same"` answer gives back that
        answer, frozen and validated, as a `Remembered`. The backend decides it from what
        it holds: a `"same"` to a request without `"memo"` is a protocol violation."""
        with self.lock:
            if not self.alive or self.proc is None:
                if self.retired:
                    raise WorkerRetired.switched_off(self.spec.name)
                raise WorkerFailed("the worker is not running")
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.calls += 1
            self.last_used = time.monotonic()
            spec = HOOKS_BY_NAME.get(method)
            replaces = spec.replaces if spec is not None else None
            request: dict[str, Any] = {"id": self.calls, "op": "call", "hook": method,
                                       "kwargs": dict(kwargs)}
            hold = None
            if self.deltas and replaces is not None and replaces in kwargs:
                hold = kwargs[replaces]
                if not _all_text(hold):
                    hold = None
                else:  # the worker keeps it; sent as changes to what it kept before
                    request["hold"] = [replaces]
                    delta = argument_delta(self._held.get(replaces), hold)
                    if delta is None or delta["set"] or delta["removed"]:
                        self._held_serial += 1  # it will hold other content
                    if delta is not None:
                        del request["kwargs"][replaces]
                        request["delta"] = {replaces: delta}
            key = kept = None
            self._pending = None
            if replaces is not None:
                # a memo is of the hook's last call only: whatever this call answers, the
                # worker's next "same" would mean this answer
                kept = self._memos.pop(method, None)
                if memo and self.same:
                    body = encode_value(request["kwargs"])
                    request["kwargs"] = msgspec.Raw(body)
                    key = _input_key(body, self._held_serial if "delta" in request else None)
                    if kept is not None and kept[0] == key:
                        request["memo"] = True
            # one deadline for the whole call: writing the request too (a worker that stops
            # reading its stdin, a request larger than the pipe, must not hold us forever)
            deadline = time.monotonic() + timeout_s
            try:
                write_frame(self.proc.stdin.fileno(), request, self.max_frame_bytes, deadline)
                if replaces is not None and hold is not None:  # written: the worker holds it
                    self._held = {replaces: hold}
                answer = read_frame(self.proc.stdout.fileno(), deadline, self.max_frame_bytes)
            except FrameTimeout as exc:
                self.kill()
                raise HookTimeout(f"{method} did not answer within {timeout_s} s; the "
                                  "worker was killed") from exc
            except (ProtocolError, OSError) as exc:
                status = self.kill()
                raise WorkerFailed(f"the worker failed during {method} ({_describe(status)}): "
                                   f"{exc}") from exc
            finally:
                self.last_used = time.monotonic()
            if answer.get("id") != self.calls:
                self.kill()
                raise WorkerFailed("the worker answered out of order; it was killed")
            same = "same" in answer
            if same and (answer["same"] is not True or not answer.get("ok") or kept is None
                         or "memo" not in request or "changes" in answer or "value" in answer):
                self.kill()
                raise WorkerFailed(f"the worker answered {method} with \"same\" when the "
                                   "backend holds no validated answer to that very input; it "
                                   "was killed")
            if "logs" in answer and target is not None:
                deliver(target, answer["logs"], kwargs if given is None else given)
            if same and kept is not None:
                self._memos[method] = kept
                return Remembered(kept[1])
            if answer.get("ok"):
                if "changes" in answer:
                    sent = kwargs.get(replaces) if replaces else None
                    value = apply_changes(sent, answer["changes"])
                    if key is not None:  # kept once the pipeline validated it (`remember`)
                        self._pending = (method, key, value)
                    return value
                return answer.get("value")
            self._held = {}  # whatever went wrong, the next request sends it in full
            self._held_serial += 1
            error = answer.get("error") or {}
            text = f"{error.get('type', 'Error')}: {error.get('message', '')}"[:600]
            if error.get("type") == INVALID_OUTPUT_ERROR:  # returned, but unsendable
                raise HookInvalidOutput(text)
            raise PluginRaised(text)

    def remember(self, method: str, value: Any, frozen: Any) -> None:
        """The pipeline froze and validated `value`, this worker's answer to its last call
        (the very object `call` returned), as `frozen`: kept for a `"same"` answer to the
        next call of `method` with exactly that input. Anything else is ignored."""
        with self.lock:
            pending = self._pending
            if pending is not None and pending[0] == method and pending[2] is value:
                self._memos[method] = (pending[1], frozen)
                self._pending = None

    def kill(self) -> int | None:
        """Stop the worker now; returns its exit status."""
        self.stopping = True
        proc = self.proc
        with self._cpu_lock:
            if self._stat_fd is not None:
                os.close(self._stat_fd)
                self._stat_fd = None
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, 9)
            except (ProcessLookupError, PermissionError):
                proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
        return proc.returncode

    def close(self) -> None:
        """Ask the worker to stop, then make sure it did; remove its scratch directory."""
        self.stopping = True
        proc = self.proc
        if proc is not None and proc.poll() is None and proc.stdin is not None:
            try:
                write_frame(proc.stdin.fileno(), {"id": -1, "op": "shutdown"},
                            deadline=time.monotonic() + KILL_GRACE_S)
                proc.wait(timeout=KILL_GRACE_S)
            except (OSError, ProtocolError, FrameTimeout, subprocess.TimeoutExpired):
                pass
        self.kill()
        shutil.rmtree(self.scratch, ignore_errors=True)


def _interpreter_pid(pid: int) -> int:
    """The worker's interpreter: the deepest process under `pid` (bwrap's or unshare's
    child, or `pid` itself without an outer layer). Found once, after the hello: a
    confined worker cannot start processes (seccomp), so the tree no longer changes.
    Its processes were started after `pid`: those with a larger pid are read first."""
    parents = _parents(n for n in _pids() if n > pid)
    if pid not in parents.values():  # pids wrapped around: read them all
        parents = _parents(_pids())
    deepest, depth = pid, 0
    for child in parents:
        up, steps = child, 0
        while up in parents and up != pid and steps < 16:
            up, steps = parents[up], steps + 1
        if up == pid and steps > depth:
            deepest, depth = child, steps
    return deepest


def _pids() -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit()]


def _parents(pids: Iterable[int]) -> dict[int, int]:
    """pid -> parent pid, of the processes of `pids` still there."""
    parents: dict[int, int] = {}
    for entry in pids:
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                text = fh.read()
        except OSError:
            continue
        fields = text[text.rfind(b")") + 2:].split()
        if len(fields) > 1:
            parents[entry] = int(fields[1])
    return parents


def _open_stat(pid: int) -> int | None:
    try:
        return os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def _input_key(body: bytes, held: int | None) -> tuple[bytes, int | None]:
    """What identifies a call's input (the hook aside): the JSON of the arguments sent in
    full, exact (key order kept, `1`, `1.0` and `true` distinct), and, when one was sent as
    changes, which content the worker then holds of it (`Worker._held_serial`)."""
    return (body, held)


def _all_text(value: Any) -> bool:
    """True for a mapping of text keys to text values (the code): one a worker may hold
    and get as changes (a shallow copy of it is a full copy)."""
    return isinstance(value, Mapping) and all(
        type(key) is str and type(item) is str for key, item in value.items())


def argument_delta(held: Mapping[str, str] | None,
                   value: Mapping[str, str]) -> dict[str, Any] | None:
    """`value` as changes to `held` (what the worker holds of that argument): keys set
    (added or of another text) and keys removed, as `worker.rebuild_arguments` applies
    them; None (send it in full) when nothing is held, or when the rebuild would not give
    `value`'s key order (a key moved) or would not be smaller."""
    if held is None:
        return None
    changed: dict[str, str] = {}
    for key, text in value.items():
        before = held.get(key)
        if before is not text and before != text:
            changed[key] = text
    if len(changed) == len(value):
        return None  # every value is new: the delta is the whole mapping
    # the order the worker's rebuild gives: the held keys still there, then the added ones
    order = [key for key in held if key in value]
    order.extend(key for key in value if key not in held)
    if order != list(value):
        return None
    return {"set": changed, "removed": [key for key in held if key not in value]}


def apply_changes(sent: Any, changes: Any) -> Any:
    """Rebuild the code mapping a worker returned as changes to what it was sent.

    The result is untrusted like any hook result: the pipeline validates it (every value
    the worker set; those it did not are `sent`'s own objects, which passed already).
    """
    if (not isinstance(sent, dict) or not isinstance(changes, dict)
            or not isinstance(changes.get("set"), dict)
            or not isinstance(changes.get("removed"), list)):
        raise WorkerFailed("the worker answered with malformed changes")
    result = {k: v for k, v in sent.items() if k not in set(map(str, changes["removed"]))}
    result.update(changes["set"])
    return result


def _describe(status: int | None) -> str:
    if status is None:
        return "still running"
    if status < 0:
        return f"killed by signal {-status}"
    return f"exit status {status}"


def _closed_while_starting() -> WorkerStartError:
    return WorkerStartError(Reason.SANDBOX_START_FAILED,
                            "the sandbox pool was closed while the worker started")


class SandboxPool:
    """The workers of one registry snapshot's sandboxed plugins."""

    def __init__(self, settings: SandboxSettings) -> None:
        sweep_once()  # what a crashed backend left behind
        self.settings = settings
        self._specs: dict[str, WorkerSpec] = {}
        self._workers: dict[str, Worker] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._reaper: threading.Thread | None = None
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dihya-spawner")
        # replacements of workers that reached `max_calls`, started in the background
        # (name -> the spec being started, then the started worker or its start error)
        self._replacing: dict[str, WorkerSpec] = {}
        self._replacements: dict[str, Worker | WorkerStartError] = {}
        # what a worker started later must report of its plugin: the facts a listing showed
        # without starting it (`expect`, `dihya.store.facts`)
        self._expected: dict[str, dict[str, Any]] = {}
        self._starting: dict[str, threading.Lock] = {}  # per plugin: one start at a time
        # workers that failed to start (name -> (spec, error)), and who to tell
        self._failures: dict[str, tuple[WorkerSpec, WorkerStartError]] = {}
        self.on_start_failure: Callable[[str], object] | None = None
        # listed from their record (`expect`) and no worker started since
        self._unstarted: set[str] = set()
        # sandbox abuses charged to each plugin and not yet taken (`take_abuses`), and who
        # to tell of each (plugin name, reason code), as it is found
        self._abuses: dict[str, int] = {}
        self.on_abuse: Callable[[str, str], object] | None = None
        self._stopped = threading.Event()  # set by `close`: the watch thread ends

        # upgrades: the worker of a plugin's previous version, replaced by `start`, kept for
        # UPGRADE_GRACE_S for the generations that started on the snapshot before the swap
        # (they present its fingerprint), so none of them loses the plugin midway
        self._previous: dict[str, Worker] = {}

    def _spawn(self, start: Callable[[], Any]) -> Any:
        try:
            started = self._spawner.submit(start)
        except RuntimeError as exc:  # `close` shut the spawner down while this start came
            raise WorkerFailed("the sandbox pool is closed") from exc
        return started.result()

    def start(self, spec: WorkerSpec) -> Hello:
        """Start the plugin's worker (kept warm) and return what it said when loaded.

        A live worker already running exactly this spec (same plugin, same fingerprint) is
        kept: a reload that changed nothing restarts nothing. A worker of an older spec is
        retired once its current call, if any, is over.
        """
        with self._lock:
            current = self._workers.get(spec.name)
        if current is not None and current.spec == spec and current.alive:
            return current.hello
        try:
            worker = Worker(spec, self.settings, spawn=self._spawn)
        except WorkerStartError as exc:
            with self._lock:  # the caller reports it; later builds start it again
                self._failures[spec.name] = (spec, exc)
            raise
        except WorkerFailed as exc:  # `_spawn` after `close`
            raise _closed_while_starting() from exc
        with self._lock:
            closed = self._closed
            if not closed:
                self._specs[spec.name] = spec
                self._failures.pop(spec.name, None)
                self._expected.pop(spec.name, None)
                self._unstarted.discard(spec.name)
                old = self._workers.pop(spec.name, None)
                self._workers[spec.name] = worker
                stale = self._keep_previous_version(spec, old)
        if closed:  # closed while it started: never leave a process behind
            worker.close()
            raise _closed_while_starting()
        for worker_gone in stale:
            self._retire(worker_gone)
        self._ensure_reaper()
        return worker.hello

    def expect(self, spec: WorkerSpec, meta: dict[str, Any]) -> None:
        """Let the plugin's worker be started by its first call, not now: a listing built
        from the facts recorded when the plugin was checked (`dihya.store.facts`) starts no
        process. The worker started later must report `meta` (what the listing showed) and,
        with `[sandbox] require_isolation`, no isolation warning; else it is not used
        (`WorkerStartError`). A worker running another spec is retired; one running another
        version serves the generations of the previous snapshot first, as after `start`."""
        with self._lock:
            self._specs[spec.name] = spec
            self._expected[spec.name] = meta
            current = self._workers.get(spec.name)
            old = self._workers.pop(spec.name) if current is not None and (
                current.spec != spec or current.hello.meta != meta) else None
            if current is None or old is not None or not current.alive:
                self._unstarted.add(spec.name)
            stale = self._keep_previous_version(spec, old)
        for worker_gone in stale:
            self._retire(worker_gone)
        self._ensure_reaper()

    def _keep_previous_version(self, spec: WorkerSpec, old: Worker | None) -> list[Worker]:
        """`old` was replaced for `spec`: when it runs another version of the plugin, keep
        it for the generations of the previous snapshot (UPGRADE_GRACE_S) instead of
        retiring it now. Returns the workers to retire. Called holding the lock."""
        if old is None or not old.alive or old.spec.fingerprint == spec.fingerprint:
            return [old] if old is not None else []
        superseded = self._previous.pop(spec.name, None)
        self._previous[spec.name] = old
        self._forget_previous_later(spec.name, old)
        return [superseded] if superseded is not None else []

    def _fresh(self, spec: WorkerSpec) -> Worker:
        """A new worker for `spec`, checked against what was expected of it (`expect`)."""
        worker = Worker(spec, self.settings, spawn=self._spawn)
        with self._lock:
            expected = self._expected.get(spec.name)
        problem = None
        if expected is not None and worker.hello.meta != expected:
            problem = (Reason.INVALID_PLUGIN, "its class reports other facts (hooks, actions, "
                       "description...) than when it was checked: reload, so that it is "
                       "checked again")
        elif expected is not None and self.settings.require_isolation and worker.hello.warnings:
            problem = (Reason.SANDBOX_START_FAILED, "[sandbox] require_isolation is set and a "
                       "layer is missing: " + "; ".join(worker.hello.warnings))
        if problem is not None:
            worker.close()
            raise WorkerStartError(*problem)
        return worker

    def _forget_previous_later(self, name: str, kept: Worker) -> None:
        """Retire `kept`, the previous version's worker of `name`, after UPGRADE_GRACE_S
        (unless something retired it before). Takes no lock: `start` calls it holding one."""

        def forget() -> None:
            with self._lock:
                gone = self._previous.pop(name) if self._previous.get(name) is kept else None
            if gone is not None:
                self._retire(gone)

        timer = threading.Timer(UPGRADE_GRACE_S, forget)
        timer.daemon = True
        timer.start()

    def retain(self, names: set[str]) -> None:
        """Retire (drain, then stop) the workers of plugins not in `names` (and of their
        previous versions: a switched-off plugin runs in no version)."""
        with self._lock:
            gone = [n for n in self._workers if n not in names]
            workers = [self._workers.pop(n) for n in gone]
            workers += [self._previous.pop(n) for n in list(self._previous) if n not in names]
            for n in gone:
                self._specs.pop(n, None)
                self._expected.pop(n, None)
                self._unstarted.discard(n)
            spare = [self._replacements.pop(n) for n in list(self._replacements)
                     if n not in names]
        for worker in workers:
            self._retire(worker)
        for extra in spare:
            if isinstance(extra, Worker):
                extra.close()

    def _retire(self, worker: Worker, grace_s: float | None = None) -> None:
        """Stop `worker` after the call it may be serving (at most the grace period)."""
        grace = self.settings.start_timeout_s + 60.0 if grace_s is None else grace_s
        worker.retired = True

        def drain() -> None:
            acquired = worker.lock.acquire(timeout=grace)
            try:
                worker.close()
            finally:
                if acquired:
                    worker.lock.release()

        threading.Thread(target=drain, name="dihya-sandbox-drain", daemon=True).start()

    def worker(self, name: str, fingerprint: str | None = None) -> Worker:
        """The live worker of `name`, started afresh when it died or was reaped.

        A worker's replacement starts in the background `prestart_margin` calls before it
        reaches `max_calls`; the first call at the limit gets it if it said hello, else the
        old worker goes on serving until it has, and is retired once idle. So no request
        waits for a recycling, unless the
        replacement failed or is not ready by `recycle_cap` calls: then the next call starts
        one itself (and gets the error, if starting fails).
        With `fingerprint` (the caller's snapshot's), a worker of another version of the
        plugin is refused (`WorkerRetired`): a generation never mixes two versions.
        """
        with self._lock:
            if self._closed:
                raise WorkerFailed("the sandbox pool is closed")
            worker = self._workers.get(name)
            spec = self._specs.get(name)
        if spec is not None and fingerprint is not None and spec.fingerprint != fingerprint:
            with self._lock:
                previous = self._previous.get(name)
            if (previous is not None and previous.spec.fingerprint == fingerprint
                    and previous.alive and not previous.retired):
                return previous  # a generation that started before an upgrade's swap
            raise WorkerRetired(f"{name} was replaced by another version during this "
                                "generation")
        alive = worker is not None and worker.alive
        if worker is not None and not alive:
            self._check_exited(worker)
        if worker is not None and alive:
            limit = self.settings.max_calls
            if worker.calls < limit:
                if worker.calls >= limit - self.prestart_margin and spec is not None:
                    self._prestart(name, spec)  # ready by the time the limit is reached
                return worker
            assert spec is not None
            fresh = self._take_replacement(name, spec)
            if fresh is not None:
                return fresh
            if worker.calls < self.recycle_cap:
                return worker
        if spec is None:  # retired by a rebuild (`retain`) after the caller's snapshot
            raise WorkerRetired.switched_off(name)
        with self._lock:
            starting = self._starting.setdefault(name, threading.Lock())
        with starting:  # one start per plugin at a time: concurrent first calls share it
            with self._lock:
                current = self._workers.get(name)
            if current is not None and current is not worker and current.alive \
                    and current.spec == spec:
                return current  # started by a concurrent call meanwhile
            if worker is not None:
                worker.close()
            with self._lock:
                spare = self._replacements.pop(name, None)  # failed: try again here
            if isinstance(spare, Worker):  # started ahead of a recycling: use it now
                if spare.alive and spare.spec == spec and not self._closed:
                    with self._lock:
                        self._workers[name] = spare
                    return spare
                spare.close()
            try:
                fresh = self._fresh(spec)
            except WorkerStartError as exc:
                self._note_failure(spec, exc)
                if exc.reason in (Reason.FINGERPRINT_MISMATCH, Reason.SHADOWED_MODULE):
                    # upgraded, edited or shadowed since the registry was built: the next
                    # rebuild's gate decides again; until then the plugin does not run
                    raise WorkerRetired(f"{name} changed on disk since it was verified "
                                        f"({exc.reason}: {exc.message}); it runs again once "
                                        "approved and reloaded") from exc
                raise
            with self._lock:
                closed = self._closed
                stale = None if closed else self._workers.get(name)
                if not closed:
                    self._workers[name] = fresh
                    self._failures.pop(name, None)
                    self._unstarted.discard(name)
            if closed:  # closed while it started: never leave a process behind
                fresh.close()
                raise WorkerFailed("the sandbox pool is closed")
            if stale is not None and stale is not worker:
                self._retire(stale)
        return fresh

    def _check_exited(self, worker: Worker) -> None:
        """Charge `worker`'s plugin with a sandbox abuse if the worker, gone, exited since its
        last answer without being asked to (a call pays the start of another). A worker the
        backend stopped itself (a timeout, a broken frame, a recycling at `max_calls`, an
        idle reap, a rebuild, `check_idle`) is not charged here."""
        if not worker.stopping and not worker.retired:
            self._charge(worker, EXITED_BETWEEN_CALLS)

    def _stop_if_busy(self, worker: Worker) -> bool:
        """Stop `worker` (and charge its plugin) if, idle now, it used more than
        IDLE_CPU_LIMIT_S of CPU time while idle (`Worker.look_idle`). A worker serving a
        call is left alone: its CPU time is the call's."""
        if not worker.lock.acquire(blocking=False):
            return False
        try:
            if worker.stopping or worker.look_idle() <= IDLE_CPU_LIMIT_S:
                return False
            worker.kill()
        finally:
            worker.lock.release()
        self._charge(worker, BUSY_WHILE_IDLE)
        return True

    def _charge(self, worker: Worker, reason: str) -> None:
        """Count one sandbox abuse against `worker`'s plugin (once per worker), and say so."""
        name = worker.spec.name
        with self._lock:
            if worker.charged:
                return
            worker.charged = True
            self._abuses[name] = self._abuses.get(name, 0) + 1
        if self.on_abuse is not None:
            self.on_abuse(name, reason)

    def take_abuses(self) -> dict[str, int]:
        """The sandbox abuses charged to each plugin since the last call (then forgotten)."""
        with self._lock:
            taken, self._abuses = self._abuses, {}
        return taken

    def check_idle(self) -> int:
        """One look of the watch thread at every idle worker (replacements and previous
        versions included): stop those that used more than IDLE_CPU_LIMIT_S of CPU time
        while idle; returns how many were stopped."""
        with self._lock:
            workers = [*self._workers.values(), *self._previous.values(),
                       *(w for w in self._replacements.values() if isinstance(w, Worker))]
        stopped = 0
        for worker in workers:
            if not worker.retired and worker.alive:
                worker.watch()
                stopped += self._stop_if_busy(worker)
        return stopped

    def warm(self) -> None:
        """Start, in the background (a few at a time), the worker of every plugin that
        `expect` registered and that has none running: a server's first calls then find
        them warm. A call that comes first starts its worker itself (or waits for the start
        under way). A worker that cannot start is in `start_failures`."""
        with self._lock:
            names = [n for n in self._expected
                     if n not in self._workers or not self._workers[n].alive]
            if self._closed or not names:
                return

        def warm_all() -> None:
            with ThreadPoolExecutor(max_workers=min(8, len(names)),
                                    thread_name_prefix="dihya-sandbox-warm") as threads:
                list(threads.map(self._warm_one, names))

        threading.Thread(target=warm_all, name="dihya-sandbox-warm", daemon=True).start()

    def _warm_one(self, name: str) -> None:
        with contextlib.suppress(WorkerStartError, WorkerFailed, OSError):
            self.worker(name)

    def _note_failure(self, spec: WorkerSpec, error: WorkerStartError) -> None:
        """Remember a failed start; tell `on_start_failure` when it was the first start of a
        plugin listed from its record (not a restart, and not files changed on disk: those
        wait for a reload, as before)."""
        with self._lock:
            if self._closed or self._specs.get(spec.name) != spec:
                return
            self._failures[spec.name] = (spec, error)
            first = spec.name in self._unstarted and error.reason not in (
                Reason.FINGERPRINT_MISMATCH, Reason.SHADOWED_MODULE)
        if first and self.on_start_failure is not None:
            self.on_start_failure(spec.name)

    def start_failures(self) -> dict[str, WorkerStartError]:
        """The plugins whose worker failed to start for their current spec (since it last
        started): a build starts those itself instead of listing them from their record."""
        with self._lock:
            return {n: e for n, (spec, e) in self._failures.items()
                    if self._specs.get(n, spec) == spec}

    @property
    def recycle_cap(self) -> int:
        """Calls after which a worker is replaced synchronously when its background
        replacement is not there: twice `max_calls`, and at least 100 more than it."""
        return max(2 * self.settings.max_calls, self.settings.max_calls + 100)

    @property
    def prestart_margin(self) -> int:
        """How many calls before `max_calls` a worker's replacement starts: a tenth of
        `max_calls` (at least 1), so that it has said hello when the limit is reached."""
        return max(1, self.settings.max_calls // 10)

    def _prestart(self, name: str, spec: WorkerSpec) -> None:
        """Start the replacement of `name`'s worker in the background, unless one is
        starting, started or failed to start."""
        with self._lock:
            if name in self._replacing or name in self._replacements or self._closed:
                return
            self._replacing[name] = spec
        threading.Thread(target=self._start_replacement, args=(spec,), daemon=True,
                         name=f"dihya-sandbox-replace-{name[:20]}").start()

    def _take_replacement(self, name: str, spec: WorkerSpec) -> Worker | None:
        """The started replacement of `name`'s worker, swapped in (the old one retired);
        None while it is starting (started now if it was not) or when it failed to start
        (no retry in the background: the old worker serves until `recycle_cap`)."""
        self._prestart(name, spec)
        with self._lock:
            ready = self._replacements.pop(name, None)
            if isinstance(ready, WorkerStartError):
                self._replacements[name] = ready
                return None
            if ready is None:
                return None  # starting: the old worker serves on
            # gone already: stopped by the watch (busy while idle), or exited
            if self._closed or self._specs.get(name) != ready.spec or not ready.alive:
                stale: Worker | None = ready
                old = None
            else:
                stale = None
                old = self._workers.get(name)
                self._workers[name] = ready
        if stale is not None:
            stale.close()
            return None
        if old is not None:
            self._retire(old)
        return ready

    def _start_replacement(self, spec: WorkerSpec) -> None:
        try:
            fresh: Worker | WorkerStartError = self._fresh(spec)
        except WorkerStartError as exc:
            fresh = exc
        except OSError as exc:
            fresh = WorkerStartError(Reason.SANDBOX_START_FAILED, f"cannot start a worker: {exc}")
        except WorkerFailed as exc:  # the pool was closed meanwhile: dropped below
            fresh = WorkerStartError(Reason.SANDBOX_START_FAILED, str(exc))
        with self._lock:
            self._replacing.pop(spec.name, None)
            keep = not self._closed and self._specs.get(spec.name) == spec
            if keep:
                self._replacements[spec.name] = fresh
        if not keep and isinstance(fresh, Worker):
            fresh.close()

    def executor(self) -> SandboxExecutor:
        return SandboxExecutor(self)

    def reap_idle(self, now: float | None = None) -> int:
        """Stop workers idle for longer than `idle_s` (and their replacements); returns how
        many workers."""
        now = time.monotonic() if now is None else now
        with self._lock:
            idle = [n for n, w in self._workers.items()
                    if now - w.last_used > self.settings.idle_s and not w.lock.locked()]
            workers = [self._workers.pop(n) for n in idle]
            spare = [self._replacements.pop(n) for n in idle if n in self._replacements]
        for worker in [*workers, *(w for w in spare if isinstance(w, Worker))]:
            worker.close()
        return len(workers)

    def _ensure_reaper(self) -> None:
        if self._reaper is not None:
            return

        every = min(self.settings.idle_s / 2, 30.0)

        def loop() -> None:
            reaped = time.monotonic()
            while not self._stopped.wait(IDLE_CHECK_S):
                self.check_idle()
                if time.monotonic() - reaped >= every:
                    reaped = time.monotonic()
                    self.reap_idle()

        self._reaper = threading.Thread(target=loop, name="dihya-sandbox-reaper", daemon=True)
        self._reaper.start()

    def workers_of(self, name: str) -> list[Worker]:
        """The workers serving `name` now: its current one and its previous version's."""
        with self._lock:
            return [w for w in (self._workers.get(name), self._previous.get(name))
                    if w is not None]

    def running(self) -> dict[str, int]:
        """Names of plugins with a live worker, and each worker's pid."""
        with self._lock:
            return {n: w.proc.pid for n, w in self._workers.items()
                    if w.alive and w.proc is not None}

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers = list(self._workers.values())
            workers += [w for w in self._replacements.values() if isinstance(w, Worker)]
            workers += self._previous.values()
            self._previous.clear()
            self._workers.clear()
            self._replacements.clear()
        self._stopped.set()
        for worker in workers:
            worker.close()
        self._spawner.shutdown(wait=False)


class SandboxExecutor:
    """The `HookExecutor` of sandboxed plugins: arguments and results cross as JSON."""

    __slots__ = ("pool",)
    kind: Final = "sandbox"

    def __init__(self, pool: SandboxPool) -> None:
        self.pool = pool

    def call(self, record: HookTarget, hook: str, kwargs: Mapping[str, Any],
             timeout_s: float) -> Any:
        worker = self.pool.worker(record.name, record.fingerprint)
        return worker.call(hook, arguments_for(record, hook, kwargs), timeout_s, record, kwargs)

    def call_at(self, record: HookTarget, hook: str, kwargs: Mapping[str, Any],
                timeout_s: float, started: float) -> tuple[Any, float]:
        """`call`, and the clock when the answer came (the worker's own deadline is
        `timeout_s` from the request, as for `call`). The pipeline's call: its answer may
        be a `Remembered` (see `Worker.call`), and the pipeline tells `remember` what it
        validated."""
        worker = self.pool.worker(record.name, record.fingerprint)
        value = worker.call(hook, arguments_for(record, hook, kwargs), timeout_s, record,
                            kwargs, memo=True)
        return value, time.perf_counter()

    def remember(self, record: HookTarget, hook: str, value: Any, frozen: Any) -> None:
        """`value`, returned by `call_at`, was validated as `frozen` (`Worker.remember`)."""
        for worker in self.pool.workers_of(record.name):
            worker.remember(hook, value, frozen)
