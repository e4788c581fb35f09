"""An immutable snapshot of every discovered plugin and its status; the active ones ordered.

`build_registry` runs the whole chain (discover -> gate -> load -> validate) and returns a
new `RegistrySnapshot`; a reload builds another and swaps the reference, so a generation
runs wholly on the snapshot it started with.

A sandbox-mode plugin is described by its worker. With a store (`facts`), what a worker
said of the plugin's files is recorded by fingerprint (`dihya.store.facts`); a build with
`start_workers=False` (a listing) takes it from there and starts no worker, the first hook
call starting it. A plugin without a record (approved before records existed, or without a
store) gets its worker started once, and the record is made then.
"""

from __future__ import annotations

import functools
import gc
import importlib
import logging
import os
import pwd
import sys
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, ParamSpec

import attrs

from dihya.config import Config, env_disabled
from dihya.gate import pathmemo, replay, resolution, startup, verifycache
from dihya.gate.decide import (
    ACTIVE,
    FAILED,
    REFUSED,
    STATUSES,
    Verdict,
    assess_all,
    site_packages,
)
from dihya.gate.discovery import discover
from dihya.gate.fingerprint import resolved_realpaths, shared_realpaths
from dihya.gate.loader import (
    DirectModule,
    Imported,
    Loaded,
    direct_source,
    forget_modules,
    imported_as,
    load_plugins,
    still_loaded,
)
from dihya.gate.startup import PthFile, scan_pth
from dihya.plugin import ActionSpec, GenerationPluginBase
from dihya.reasons import Reason
from dihya.sandbox.executor import HookExecutor, HookPlan, InProcessExecutor, hook_plans

if TYPE_CHECKING:
    from dihya.sandbox.pool import Hello, SandboxPool, WorkerSpec
    from dihya.store import Store

log = logging.getLogger("dihya.registry")
_IN_PROCESS = InProcessExecutor()


@attrs.frozen
class PluginRecord:
    """Everything the core reports about one discovered entry point."""

    name: str
    distribution: str
    version: str
    value: str
    status: str
    reason: str | None
    message: str
    mode: str | None
    fingerprint: str | None
    approved_fingerprint: str | None
    hooks: tuple[str, ...] = ()
    required: bool = False
    roles: tuple[str, ...] | None = None
    safe: bool | None = None
    priority: int | None = None
    description: str | None = None
    author: str | None = None
    isolation: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    actions: Mapping[str, ActionSpec] = attrs.field(factory=dict)
    # the arguments each implemented hook takes: a call passes those, by keyword
    hook_args: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)
    executor: HookExecutor | None = attrs.field(default=None, eq=False, repr=False)
    instance: GenerationPluginBase | None = attrs.field(default=None, eq=False, repr=False)
    # for a plugin imported in this process: its verified files, to forget its modules later
    site: Path | None = attrs.field(default=None, eq=False, repr=False)
    files: tuple[str, ...] = attrs.field(default=(), eq=False, repr=False)
    # for a plugin loaded in this process: each hook's call plan, made once per record
    hook_plans: Mapping[str, HookPlan] = attrs.field(
        init=False, eq=False, repr=False,
        default=attrs.Factory(lambda self: hook_plans(self.instance, self.hooks,
                                                      self.hook_args, self.executor),
                              takes_self=True))

    @property
    def active(self) -> bool:
        return self.status == ACTIVE

    @property
    def worker_user(self) -> str | None:
        """Who this sandboxed plugin's worker runs as, as the backend started it (never as
        the worker claims): the sandbox user, "root" (only with `[sandbox] allow_root`) or
        the backend's own user; None in-process or when no worker started."""
        if self.mode != "sandbox" or not self.isolation:
            return None
        for layer in self.isolation:
            if layer.startswith("user:"):
                return layer.removeprefix("user:")
        return backend_user()

    def to_json(self) -> dict[str, Any]:
        """The fields of `dihya plugins list --json` and the HTTP API."""
        return {
            "name": self.name, "distribution": self.distribution, "version": self.version,
            "status": self.status, "reason": self.reason, "message": self.message,
            "mode": self.mode, "fingerprint": self.fingerprint,
            "approved_fingerprint": self.approved_fingerprint, "hooks": list(self.hooks),
            "required": self.required,
            "roles": list(self.roles) if self.roles is not None else None,
            "safe": self.safe, "priority": self.priority, "entry_point": self.value,
            "description": self.description, "author": self.author,
            "isolation": list(self.isolation), "warnings": list(self.warnings),
            "worker_user": self.worker_user,
            "actions": [a.to_json() for a in self.actions.values()],
        }


def backend_user() -> str:
    """This process's user name (its uid when it has no name)."""
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


@attrs.frozen
class RegistrySnapshot:
    """The plugins as the core sees them at one moment; never changed after it is built."""

    records: tuple[PluginRecord, ...]
    config: Config
    built_at: float
    build_ms: float
    sandbox: SandboxPool | None = attrs.field(default=None, eq=False, repr=False)

    owns_sandbox: bool = attrs.field(default=True, eq=False, repr=False)
    # the `.pth` files of this interpreter's site directories that run code at start
    pth: tuple[PthFile, ...] = ()
    # the gate's verdicts this snapshot's records were made from
    verdicts: tuple[Verdict, ...] = attrs.field(default=(), eq=False, repr=False)
    # derived from `records` at their first use (each generation asks for `active`, a
    # request for a plugin `get`s it): computed once per snapshot, not per call
    _active: tuple[PluginRecord, ...] | None = attrs.field(
        default=None, init=False, eq=False, repr=False)
    _by_name: dict[str, PluginRecord] | None = attrs.field(
        default=None, init=False, eq=False, repr=False)

    def close(self) -> None:
        """Stop this snapshot's sandbox workers, unless the pool is shared (a server's)."""
        if self.sandbox is not None and self.owns_sandbox:
            self.sandbox.close()

    @property
    def active(self) -> tuple[PluginRecord, ...]:
        """Active plugins in call order: priority, then entry-point name."""
        found = self._active
        if found is None:
            found = tuple(sorted((r for r in self.records if r.active),
                                 key=lambda r: (r.priority or 0, r.name)))
            object.__setattr__(self, "_active", found)  # the same value in every thread
        return found

    def get(self, name: str) -> PluginRecord | None:
        """The first record named `name` (several only for a `duplicate-name` refusal)."""
        index = self._by_name
        if index is None:
            index = {}
            for r in self.records:
                index.setdefault(r.name, r)
            object.__setattr__(self, "_by_name", index)
        return index.get(name)

    def names(self) -> list[str]:
        return sorted({r.name for r in self.records})


P = ParamSpec("P")


def _collector_paused(build: Callable[P, RegistrySnapshot]) -> Callable[P, RegistrySnapshot]:
    """`build` with the cyclic garbage collector paused while it runs: a build allocates
    many objects that all stay alive (specs, modules, classes, records), so collections
    during it found nothing to free and traversed everything alive (a full one at
    N = 1000). A collector the application switched off stays off, and is never frozen.

    After the first build of a process, what is alive is frozen (`gc.freeze`,
    `_freeze_first_build`): without it, the first allocations after the build traversed
    everything it made, twice (the young and the middle generation: 11-13 ms at
    N = 1000, most of a second listing's cost), to free nothing. The next build that is
    not a replay gives the frozen objects back to the oldest generation (`gc.unfreeze`),
    where full collections see them again: cyclic garbage made before the first build
    waits until then, never longer. A process that froze objects itself (a server's
    preloaded app) is left as it is."""

    @functools.wraps(build)
    def paused(*args: P.args, **kwargs: P.kwargs) -> RegistrySnapshot:
        was_on = gc.isenabled()
        if was_on:
            gc.disable()
        built = False
        try:
            snapshot = build(*args, **kwargs)
            built = True
        finally:
            if was_on:
                if built:
                    _freeze_first_build()  # before the collector can run
                gc.enable()
        return snapshot

    return paused


# [this module froze the objects alive after the first build and has not given them back,
# a build already froze once]
_FROZEN: list[bool] = [False, False]


def _freeze_first_build() -> None:
    """`gc.freeze()` after this process's first build, unless something is frozen already
    (by the application). (`gc.freeze` moves lists; `gc.get_freeze_count` walks them, so it
    is asked only while nothing is frozen.)"""
    if _FROZEN[1]:
        return
    _FROZEN[1] = True
    if gc.get_freeze_count() == 0:
        gc.freeze()
        _FROZEN[0] = True


def _thaw() -> None:
    """Give back what `_freeze_first_build` froze, once: at a build that is not a replay
    (what the first build made may be garbage now)."""
    if _FROZEN[0]:
        _FROZEN[0] = False
        gc.unfreeze()


@_collector_paused
def build_registry(config: Config, environ: Mapping[str, str] | None = None,
                   path: Sequence[str] | None = None,
                   switches: Mapping[str, tuple[str, str]] | None = None,
                   sandbox: SandboxPool | None = None,
                   previous: RegistrySnapshot | None = None,
                   facts: Store | None = None,
                   start_workers: bool = True,
                   must_start: Collection[str] = ()) -> RegistrySnapshot:
    """Discover, verify and load: a fresh snapshot for `config`.

    In-process plugins are imported here, after the gate; sandbox-mode plugins are loaded
    in their own worker processes (of `sandbox`, or of a new pool owned by the snapshot).

    `switches` maps plugin names to a runtime (reason code, message) from the state store
    (`disabled-by-admin`, `quarantined`); such plugins are not imported.

    `previous` is the snapshot this one replaces (a reload): the modules of its in-process
    plugins that are not loaded again with the same fingerprint (upgraded, removed,
    disabled) are dropped from `sys.modules`, so an upgrade is imported afresh.

    `facts`: the store where what sandbox workers said of their plugins is recorded
    (`dihya.store.facts`); every worker started here records it. `start_workers=False`: a
    sandbox-mode plugin with a valid record for its fingerprint is listed from it and its
    worker is left to its first call (`SandboxPool.expect`), except those in `must_start`
    (their worker failed to start since: started here, so that the record says why).
    """
    start = time.perf_counter()
    disabled = env_disabled(environ)
    inputs = (config, disabled, None if path is None else tuple(path),
              tuple(sys.path) if path is None else None, dict(switches or {}),
              startup.site_directories())
    environment = resolution.environment(path)
    finders = replay.finders()
    trace = replay.last()
    # nothing the last build looked at changed (every path `stat`ed again): its answer
    held = replay.holds(trace, inputs, environment)
    reused: _Built | None = trace.value if held and trace is not None else None
    started_ns = time.time_ns()
    gate_seen: dict[str, Any] | None = None
    pth_seen: dict[str, Any] | None = None
    realpaths: dict[str, str] = {}
    records_seen: dict[str, Any] = {}
    direct: Mapping[tuple[str, tuple[str, ...]], str]
    if reused is None:
        _thaw()
        with pathmemo.one_pass(), shared_realpaths():  # each path looked at once per build
            discovered = discover(config.group, path)
            verdicts = tuple(assess_all(discovered, config, disabled, path, switches))
            direct = resolution.direct_entries() if path is None else {}
            gate_seen = pathmemo.observed()
            # the RECORDs the gate `stat`ed in this build: the `.pth` scan's owner lookups
            # use these keys (threat model, "The `.pth` scan after the imports")
            records_seen = pathmemo.looked_at("/RECORD")
            realpaths = resolved_realpaths()
    else:
        verdicts, direct = reused.verdicts, reused.direct
    in_process: list[Verdict] = []
    sandboxed: list[Verdict] = []
    for v in verdicts:  # one pass (a membership test per verdict was quadratic in N)
        if v.admitted:
            (in_process if v.entry is not None and v.entry.mode == "in-process"
             else sandboxed).append(v)
    if previous is not None and previous.verdicts is not verdicts:
        _forget_stale_modules(previous, in_process)
    # in-process plugins the last build loaded, still as loaded (module, class): kept
    kept = {} if reused is None else _still_loaded(reused, in_process)
    pending = [v for v in in_process if v.plugin.name not in kept]
    if reused is not None and pending:
        importlib.invalidate_caches()  # as discovery does before a load
    loaded, failures = load_plugins(config.group, [v.plugin.entry_point for v in pending],
                                    _direct_modules(pending, direct)) if pending else ({}, {})
    owns_sandbox = sandbox is None
    if sandboxed and sandbox is None:
        from dihya.sandbox.pool import SandboxPool

        sandbox = SandboxPool(config.sandbox)
    specs = {s.name: s for s in _worker_specs(config, sandboxed, path)}
    recorded = _recall(facts, config.group, sandboxed)
    listed = {} if start_workers else {n: h for n, h in recorded.items()
                                       if n in specs and n not in must_start}
    hellos = _start_workers(sandbox, [s for n, s in specs.items() if n not in listed])
    if facts is not None:
        _record_facts(facts, config.group, specs, hellos, recorded)
    if reused is not None and not sandboxed and not pending:
        records = reused.records  # the same verdicts, the same loaded plugins
    else:
        records = _records(verdicts, reused, kept, loaded, failures, listed, hellos, specs,
                           sandbox, config)
    if sandbox is not None and not owns_sandbox:
        sandbox.retain({r.name for r in records if r.active and r.mode == "sandbox"})
    if reused is not None and not pending:
        pth = reused.pth  # its checks were replayed, and no plugin code ran since
    else:
        # looked at with every build, after the load (a plugin's import may write one): a
        # reload or auto_reload (which watches *.pth) sees a new one; the site directories
        # and `.pth` files are `stat`ed again, the RECORDs naming an owner are not
        with pathmemo.one_pass(records_seen):
            pth = scan_pth(config.known_pth)
            pth_seen = pathmemo.observed()
    loaded_now = {**kept, **_imported(pending, loaded)}
    built = _Built(verdicts, direct, pth, loaded_now, records)
    if reused is None:
        replay.keep(replay.make(inputs, (gate_seen, pth_seen), started_ns,
                                (finders, environment), realpaths, built,
                                (replay.finders(), resolution.environment(path))))
    elif pending:  # the same checks: what was loaded now, if the `.pth` files said the same
        assert trace is not None
        replay.keep(attrs.evolve(trace, value=built) if pth == reused.pth else None)
    verifycache.save_shared()  # what this build learned, for the next process too
    elapsed = (time.perf_counter() - start) * 1000
    return RegistrySnapshot(records, config, time.time(), elapsed, sandbox, owns_sandbox,
                            pth, verdicts)


@attrs.frozen(eq=False)
class _Built:
    """What a build derived from what it looked at: the value of its `replay.Trace`."""

    verdicts: tuple[Verdict, ...]
    direct: Mapping[tuple[str, tuple[str, ...]], str]
    pth: tuple[PthFile, ...]
    # in-process plugins loaded: name -> (what loaded, (its module, attribute path))
    loaded: Mapping[str, tuple[Loaded, Imported]]
    records: tuple[PluginRecord, ...]


def _still_loaded(reused: _Built, in_process: Sequence[Verdict]
                  ) -> dict[str, tuple[Loaded, Imported]]:
    kept = {}
    for v in in_process:
        name = v.plugin.name
        got = reused.loaded.get(name)
        if got is not None and still_loaded(got[1], got[0].cls):
            kept[name] = got
    return kept


def _imported(pending: Sequence[Verdict], loaded: Mapping[str, Loaded]
              ) -> dict[str, tuple[Loaded, Imported]]:
    found = {}
    for v in pending:
        done = loaded.get(v.plugin.name)
        where = None if done is None else imported_as(v.plugin.entry_point, done)
        if done is not None and where is not None:
            found[v.plugin.name] = (done, where)
    return found


def _records(verdicts: Sequence[Verdict], reused: _Built | None,
             kept: Mapping[str, Any], loaded: Mapping[str, Loaded],
             failures: Mapping[str, Any], listed: Mapping[str, Any],
             hellos: Mapping[str, Any], specs: Mapping[str, Any],
             sandbox: SandboxPool | None, config: Config) -> tuple[PluginRecord, ...]:
    """A record per verdict, in order; a replayed build keeps the records of the plugins it
    did not load again (refused, disabled, in-process and still loaded)."""
    records = []
    for i, verdict in enumerate(verdicts):
        name = verdict.plugin.name
        if not verdict.admitted:
            if reused is not None:
                records.append(reused.records[i])
                continue
            records.append(_record(verdict, verdict.status or REFUSED, verdict.reason,
                                   verdict.message))
        elif name in listed:
            record = _sandboxed_record(verdict, listed[name], sandbox, config)
            if record.active:
                assert sandbox is not None
                sandbox.expect(specs[name], listed[name].meta)
            records.append(record)
        elif name in hellos:
            records.append(_sandboxed_record(verdict, hellos[name], sandbox, config))
        elif name in kept:
            assert reused is not None
            records.append(reused.records[i])
        elif name in failures:
            failure = failures[name]
            records.append(_record(verdict, FAILED, failure.reason, failure.message))
        else:
            records.append(_loaded_record(verdict, loaded[name]))
    return tuple(records)


def _direct_modules(in_process: Sequence[Verdict],
                    direct: Mapping[tuple[str, tuple[str, ...]], str]
                    ) -> dict[str, DirectModule]:
    """{top-level module of an entry point: (the path entry the gate found it in, its one
    source file)} for the plugins whose entry point's top-level module is a module or
    regular package of their own distribution (a listed `NAME.py` or `NAME/__init__.py`)
    that resolution found in their site directory with nothing before it
    (`resolution.direct_entries`); a name claimed by two path entries is left out. The
    source file (`direct_source`) is None unless it is the only importable file the
    distribution lists by that name."""
    found: dict[str, DirectModule] = {}
    clashes: set[str] = set()
    if not direct:
        return found
    for v in in_process:
        if v.plugin.dist_info is None:
            continue
        entry = direct.get((os.fspath(site_packages(v.plugin) or ""), v.files))
        top = v.plugin.entry_point.module.partition(".")[0]
        if entry is None or (f"{top}.py" not in v.files
                             and f"{top}/__init__.py" not in v.files):
            continue
        if found.setdefault(top, (entry, direct_source(top, v.files)))[0] != entry:
            clashes.add(top)
    for top in clashes:
        del found[top]
    return found


def _forget_stale_modules(previous: RegistrySnapshot, in_process: Sequence[Verdict]) -> None:
    # compared as strings (a record's `site` is its plugin's `site_packages`): a `Path` per
    # plugin made, hashed and compared was most of this step's cost
    keep = {(v.plugin.name, v.fingerprint, _site_of(v.plugin)) for v in in_process}
    for r in previous.records:
        if r.site is not None and (r.name, r.fingerprint, os.fspath(r.site)) not in keep:
            forget_modules(r.site, r.files)


def _site_of(plugin: Any) -> str | None:
    site = site_packages(plugin)
    return None if site is None else os.fspath(site)


def _worker_specs(config: Config, verdicts: Sequence[Verdict],
                  path: Sequence[str] | None) -> list[WorkerSpec]:
    if not verdicts:
        return []
    from dihya.sandbox.pool import WorkerSpec

    # The worker must find what this process found: the import-path entries outside this
    # Python's own prefixes (its `-I` path has those); never the current directory.
    prefixes = tuple({sys.prefix, sys.base_prefix})
    cwd = os.getcwd()
    extra = tuple(p for p in (sys.path if path is None else path)
                  if p and not p.startswith(prefixes) and os.path.abspath(p) != cwd)
    return [WorkerSpec(config.group, v.plugin.name, v.fingerprint or "", extra,
                       os.fspath(v.plugin.dist_info or "")) for v in verdicts]


def _start_workers(sandbox: SandboxPool | None, specs: Sequence[WorkerSpec]) -> dict[str, Any]:
    if sandbox is None or not specs:
        return {}
    from dihya.sandbox.admission import start_all

    return start_all(sandbox, specs)


def facts_of(hello: Hello) -> dict[str, Any]:
    """What `dihya.store.facts` records of a worker's hello."""
    return {"meta": hello.meta, "layers": list(hello.layers), "warnings": list(hello.warnings)}


def hello_of(facts: Mapping[str, Any]) -> Hello | None:
    """The hello a recorded `facts` stands for; None if it breaks the worker contract."""
    from dihya.sandbox.admission import checked_meta
    from dihya.sandbox.pool import Hello

    meta, layers, warnings = facts.get("meta"), facts.get("layers"), facts.get("warnings")
    if not isinstance(meta, dict) or not isinstance(layers, list) \
            or not isinstance(warnings, list) \
            or not all(isinstance(x, str) for x in (*layers, *warnings)):
        return None
    try:
        checked_meta(meta)
    except ValueError:
        return None
    return Hello(meta, tuple(layers), tuple(warnings))


def _recall(store: Store | None, group: str, verdicts: Sequence[Verdict]) -> dict[str, Hello]:
    """The valid records of `verdicts` (by name); none when the store cannot be read."""
    if store is None or not verdicts:
        return {}
    from dihya.store.facts import recall_facts
    from dihya.store.faults import StoreError

    try:
        found = recall_facts(store, group, [(v.plugin.name, v.fingerprint or "")
                                            for v in verdicts])
    except StoreError:
        return {}  # the workers are started, as without a store
    hellos = {name: hello_of(facts) for (name, _fp), facts in found.items()}
    return {name: hello for name, hello in hellos.items() if hello is not None}


def _record_facts(store: Store, group: str, specs: Mapping[str, WorkerSpec],
                  hellos: Mapping[str, Any], recorded: Mapping[str, Hello]) -> None:
    """Record what each worker started here said, unless already recorded as it said."""
    from dihya.sandbox.pool import Hello
    from dihya.store.facts import record_facts
    from dihya.store.faults import StoreError

    for name, hello in hellos.items():
        if not isinstance(hello, Hello) or hello_of(facts_of(hello)) is None:
            continue  # failed to start, or said something invalid: nothing to remember
        if recorded.get(name) == hello:
            continue
        try:
            record_facts(store, group, name, specs[name].fingerprint, facts_of(hello))
        except StoreError:
            return  # the next build records it


def _sandboxed_record(verdict: Verdict, hello: Any, sandbox: SandboxPool | None,
                      config: Config) -> PluginRecord:
    from dihya.sandbox.admission import checked_meta
    from dihya.sandbox.pool import WorkerStartError

    if isinstance(hello, WorkerStartError):
        # the words say why (an exit status, a timeout, the worker's own refusal): an
        # operator reads them in the server log; plugin code has seen no needs yet
        log.warning("sandbox worker for %s could not start (%s): %s", verdict.plugin.name,
                    hello.reason, hello.message[:500])
        # files changed (or something now shadows them) between the gate and the worker's
        # own check: a refusal, as the gate would have said a moment later
        status = REFUSED if hello.reason in STATUSES[REFUSED] else FAILED
        return _record(verdict, status, hello.reason, hello.message)
    try:
        meta = checked_meta(hello.meta)
    except ValueError as exc:
        return _record(verdict, FAILED, Reason.INVALID_PLUGIN, str(exc))
    deprecated = meta.pop("deprecations")
    warnings = tuple(hello.warnings)  # isolation only: deprecations are no reason to refuse
    if config.sandbox.require_isolation and warnings:
        return _record(verdict, FAILED, Reason.SANDBOX_START_FAILED,
                       "[sandbox] require_isolation is set and a layer is missing: "
                       + "; ".join(warnings), isolation=hello.layers, **meta)
    assert sandbox is not None
    return _record(verdict, ACTIVE, None, "active", isolation=hello.layers,
                   warnings=(*warnings, *deprecated), executor=sandbox.executor(), **meta)


def _record(verdict: Verdict, status: str, reason: str | None, message: str,
            **extra: Any) -> PluginRecord:
    p, entry = verdict.plugin, verdict.entry
    # admitted in-process: its modules were imported here; where from, to forget them later
    imported = bool(verdict.files) and entry is not None and entry.mode == "in-process"
    return PluginRecord(
        name=p.name, distribution=p.distribution, version=p.version, value=p.value,
        status=status, reason=reason, message=message,
        mode=entry.mode if entry else None, fingerprint=verdict.fingerprint,
        approved_fingerprint=entry.fingerprint if entry else None,
        required=entry.required if entry else False, roles=entry.roles if entry else None,
        site=site_packages(p) if imported else None, files=verdict.files if imported else (),
        **extra,
    )


def _loaded_record(verdict: Verdict, loaded: Loaded) -> PluginRecord:
    cls, entry = loaded.cls, verdict.entry
    if entry is not None and entry.mode == "in-process" and not cls.safe:
        meta = {"hooks": loaded.hooks, "safe": cls.safe, "priority": cls.priority,
                "description": cls.description, "author": cls.author,
                "actions": loaded.actions, "hook_args": loaded.hook_args}
        return _record(verdict, REFUSED, Reason.UNSAFE_IN_PROCESS,
                       f"approved in-process but {cls.__qualname__}.safe is False; approve "
                       "it with --mode sandbox", **meta)
    # what `_record` makes of it, without the keyword dicts in between: the record of
    # every active in-process plugin on every build
    p = verdict.plugin
    in_process = entry is not None and entry.mode == "in-process"
    imported = in_process and bool(verdict.files)
    return PluginRecord(
        name=p.name, distribution=p.distribution, version=p.version, value=p.value,
        status=ACTIVE, reason=None, message="active",
        mode=entry.mode if entry else None, fingerprint=verdict.fingerprint,
        approved_fingerprint=entry.fingerprint if entry else None,
        hooks=loaded.hooks, required=entry.required if entry else False,
        roles=entry.roles if entry else None, safe=cls.safe, priority=cls.priority,
        description=cls.description, author=cls.author, isolation=_NOT_ISOLATED,
        warnings=loaded.deprecations, actions=loaded.actions, hook_args=loaded.hook_args,
        executor=_IN_PROCESS, instance=loaded.instance,
        site=site_packages(p) if imported else None, files=verdict.files if imported else ())


_NOT_ISOLATED: Final = ("none: runs in the backend process",)
