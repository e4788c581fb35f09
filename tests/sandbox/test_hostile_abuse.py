"""Sandbox abuses at the pool: what is charged to a plugin (`SandboxPool.take_abuses`) and
what is not. The quarantine they lead to is tested through the HTTP backend
(`tests/web/test_sandbox_abuse.py`)."""

from __future__ import annotations

import time

from sandbox_support import hook, sandboxed, statuses

from dihya.pipeline import run_generation
from dihya.sandbox.pool import IDLE_CPU_LIMIT_S, SandboxPool
from support.polling import wait_for

# slow when asked (a timeout: the pool kills the worker), crashes when asked (during the
# call: a sandbox violation), else answers
MOODY = hook('''import os, time
if needs.get("description") == "slow":
    time.sleep(30)
if needs.get("description") == "crash":
    os._exit(3)
code["moody.txt"] = "ok"
return code''')
EXITS = hook('''import os, sys
sys.modules["dihya.sandbox.worker"].read_frame = lambda *a, **k: os._exit(0)
return code''')


def test_workers_the_pool_stopped_itself_are_not_charged(plugin_site, needs, closing) -> None:
    """A timeout and a crash during a call are failed calls already (counted as such); the
    worker the next call then has to start is not charged as an abuse on top."""
    snap, names = sandboxed(plugin_site, {"moody": MOODY}, timeout=1.0)
    closing(snap)
    name = names["moody"]
    pool: SandboxPool = snap.sandbox
    for mood, status in (("slow", "timeout"), ("calm", "ok"), ("crash", "failed"),
                         ("calm", "ok"), ("calm", "ok")):
        result = run_generation(dict(needs, description=mood), snap)
        assert statuses(result)[name] == status, mood
    assert pool.take_abuses() == {}
    assert pool.reap_idle(now=time.monotonic() + 10_000) == 1  # reaped when idle
    assert statuses(run_generation(needs, snap))[name] == "ok"
    assert pool.take_abuses() == {}


def test_a_worker_that_exits_unasked_is_charged_once(plugin_site, needs, closing) -> None:
    snap, names = sandboxed(plugin_site, {"exits": EXITS})
    closing(snap)
    name = names["exits"]
    pool: SandboxPool = snap.sandbox
    assert statuses(run_generation(needs, snap))[name] == "ok"
    wait_for(lambda: name not in pool.running(), "the worker exited")
    assert pool.take_abuses() == {}  # found by the next call, which pays the start
    assert statuses(run_generation(needs, snap))[name] == "ok"
    assert pool.take_abuses() == {name: 1}
    assert pool.take_abuses() == {}


def test_an_idle_well_behaved_worker_uses_no_cpu(plugin_site, needs, closing) -> None:
    snap, names = sandboxed(plugin_site, {"calm": MOODY})
    closing(snap)
    name = names["calm"]
    pool: SandboxPool = snap.sandbox
    for _ in range(3):
        assert statuses(run_generation(needs, snap))[name] == "ok"
    worker = pool.worker(name)
    for _ in range(3):  # three looks with no call between them
        assert pool.check_idle() == 0
    assert worker.cpu_time() is not None
    assert worker.idle_cpu_s < IDLE_CPU_LIMIT_S
    assert pool.take_abuses() == {}
