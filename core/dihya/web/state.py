"""What one backend app holds: config, store, auditor and the current registry snapshot.

Lives in `app.extensions["dihya"]`, never in module globals. The snapshot is replaced, not
changed: a request takes a reference once and works on it to the end. The store's state
version and the config file are checked every `version_ttl_s` (and at once on a PostgreSQL
notification); when another worker or node changed a switch, reloaded, or an operator
edited the config (or, with `[plugins] auto_reload`, pip changed site-packages), this
worker rebuilds its snapshot — off the request path when a background reloader runs (under
`dihya serve`), else on the next request. Sandbox workers live in one pool per app: a
rebuild keeps the workers of unchanged plugins and drains the others. A build describes a
sandbox-mode plugin from what its worker said when it was checked (`dihya.store.facts`)
and waits for no worker; the pool starts them in the background, and one that fails to
start makes the next check rebuild with that worker started in the build (reported
failed). Each build audits what changed since the states last audited in the store (a
plugin discovered, refused or failed: once per change, not once per worker; the registry
reloaded), and the audit retention runs at start and then at most daily per store.

The store fails closed. A worker whose store cannot be opened when it starts (a deleted
SQLite file — `dihya serve` workers never create one —, a replaced one, PostgreSQL down)
still starts, with nothing approved, and answers every call that needs the store with 503
(`require_store`) until the store is there; then it builds its real registry before it
serves. A store that fails later fails each transaction (`dihya.store`), and each answer,
the same way; `store_status` is what `/readyz` probes: a committed write.

Last good config wins: a config file that is missing, unreadable, empty, malformed or
invalid, or that lost every approval without saying `allow = []`, is never taken as a
change (see `dihya.config.config_problem`). The worker keeps serving its last good config,
logs and audits the reason once per change of the file, and reports it in
`config_problem`, which `/readyz` turns into a failing config check until a good config
is back.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import attrs

from dihya.audit import Auditor
from dihya.audit.gdpr import DAY_S, apply_retention
from dihya.config import PROBLEMS, Config, ConfigError, config_problem, load_config
from dihya.gate.sitewatch import SiteStamp, site_stamp
from dihya.registry import RegistrySnapshot, build_registry
from dihya.sandbox.pool import SandboxPool
from dihya.store import Store, failures
from dihya.store.faults import StoreFault, StoreUnavailable
from dihya.store.listen import StateListener, open_listener
from dihya.store.marker import StoreMarker

log = logging.getLogger("dihya.web")

LISTEN_RETRY_S = 5.0  # after a lost PostgreSQL LISTEN connection, polling alone meanwhile


class DihyaState:
    """Per-app state of the backend; thread-safe."""

    def __init__(self, config_path: Path, version_ttl_s: float = 0.5,
                 background: bool = False, boot_config: Config | None = None,
                 create_store: bool = True) -> None:
        self.config_path = config_path
        # why the file on disk is not the config in use (a reason code), None when it is
        self.config_problem: str | None
        self.config, self.config_problem = _first_config(config_path, boot_config)
        self._good_config = self.config_problem is None
        self.pool = SandboxPool(self.config.sandbox)
        # a worker that fails to start in the background: rebuild, so that its plugin is
        # reported failed (starting it in the build) rather than active
        self._start_failed = False
        self.pool.on_start_failure = self._worker_start_failed
        self.pool.on_abuse = self._sandbox_abused
        url = self.config.effective_store_url
        self.marker = StoreMarker.for_config(config_path, url)
        # created only by an app allowed to (not a `dihya serve` worker: the command made
        # it before starting them), and never where the marker says a store already was
        self.store = Store(url, create=create_store and not self.marker.expected,
                           synchronous=self.config.store_synchronous)
        # every event is committed before `record` returns; concurrent requests of this
        # process share the commit (`dihya.audit.writer`)
        self.auditor = Auditor(self.config.audit_key, store=self.store, marker=self.marker)
        self._store_opened = False
        self._open_lock = threading.Lock()
        self._open_retry_at = 0.0
        self._open_fault: StoreFault | None = None
        self._probe_ok_at: float | None = None
        self.version_ttl_s = version_ttl_s
        # `_lock` serialises rebuilds; requests never take it (they read `_snapshot`, one
        # reference), so a rebuild never stalls a generation.
        self._lock = threading.Lock()
        self._checked_at = 0.0
        self._config_stamp = self._stamp()
        self._config_changed = False
        # a good file was taken: its problem (if any) is cleared once the registry serves it
        self._file_served_once_built = False
        # auto_reload: the site-packages stamp seen at the last check, and the one built for
        # (taken before the first build: an install finishing while it runs is a change)
        self._site_seen: SiteStamp | None = site_stamp() if self.config.auto_reload else None
        self._site_built: SiteStamp | None = self._site_seen
        self._retention_checked = time.monotonic()
        self._serving = False  # the snapshot is built from the store's switches
        # (snapshot, the state version it was built for): swapped as one, so a request
        # never pairs a newer version with an older snapshot (see `current`); version -1:
        # none yet, the first check builds the registry of the store
        self._built: tuple[RegistrySnapshot, int]
        try:
            self._open_store()
            version = self.store.state_version()
            self._built = (self._build(None), version)
            self._serving = True
            apply_retention(self.auditor, self.config.audit_retention_days,
                            plugin_log_days=self.config.plugin_log_retention_days)
        except StoreUnavailable as exc:
            # fail closed: nothing approved, every call that needs the store answers 503
            # until it is back (the health has logged why)
            self._open_fault, self._open_retry_at = exc.fault, time.monotonic() + 1.0
            if not hasattr(self, "_built"):
                self._built = (build_registry(attrs.evolve(self.config, allow=()),
                                              environ=os.environ, switches={},
                                              sandbox=self.pool), -1)
        self._stop = threading.Event()
        self._reloader: threading.Thread | None = None
        if background:
            self._reloader = threading.Thread(target=self._reload_loop, daemon=True,
                                              name="dihya-reloader")
            self._reloader.start()

    def _build(self, old: RegistrySnapshot | None,
               request_id: str | None = None) -> RegistrySnapshot:
        switches = {name: (s.reason_code, _switch_message(s.reason_code, s.reason))
                    for name, s in self.store.plugin_switches().items()}
        if self.pool.settings != self.config.sandbox:  # [sandbox] edited: new workers
            old_pool, self.pool = self.pool, SandboxPool(self.config.sandbox)
            self.pool.on_start_failure = self._worker_start_failed
            self.pool.on_abuse = self._sandbox_abused
            old_pool.retain(set())
        # Sandbox-mode plugins are described from what their worker said when it was
        # checked (`dihya.store.facts`): the build waits for no worker. Those without a
        # record, and those whose worker failed to start since, are started here (their
        # record then says why not); the others start in the background right after.
        self._start_failed = False
        new = build_registry(self.config, environ=os.environ, switches=switches,
                             sandbox=self.pool, previous=old, facts=self.store,
                             start_workers=False, must_start=self.pool.start_failures())
        self.pool.warm()
        self._audit_changes(old, new, request_id)
        return new

    def _worker_start_failed(self, _name: str) -> None:
        self._start_failed = True

    def _sandbox_abused(self, name: str, reason: str) -> None:
        """A sandbox worker of `name` exited between calls unasked, or used CPU while idle
        and was stopped (`reason`): audited as it is found; counted as a failed call by the
        next `note_outcomes`."""
        record = self._snapshot.get(name)
        self.auditor.record("hook.sandbox-violation", "failed", plugin=name, reason=reason,
                            plugin_version=record.version if record else None,
                            plugin_fingerprint=record.fingerprint if record else None)

    def _audit_changes(self, old: RegistrySnapshot | None, new: RegistrySnapshot,
                       request_id: str | None) -> None:
        """One event per change, whichever worker or node saw it first: a plugin seen for
        the first time (or in a new version or with other files), a plugin newly refused or
        failed, compared with the states last audited in the store (`dihya.store.seen`);
        and one per reload. A worker that starts with nothing changed records nothing."""
        from dihya.store.seen import SeenState, note_changes

        changes = note_changes(self.store, [
            SeenState(r.name, r.version, r.fingerprint, r.status, r.reason)
            for r in new.records])
        record = self.auditor.record
        for change in changes:
            r = change.now
            ids = {"plugin": r.name, "plugin_version": r.version,
                   "plugin_fingerprint": r.fingerprint, "request_id": request_id}
            if change.new_version:
                record("plugin.discovered", "ok", **ids)
            if change.new_status and r.status in ("refused", "failed"):
                record(f"plugin.{r.status}", r.status, reason=r.reason, **ids)
        if old is not None:
            record("registry.reloaded", "ok", request_id=request_id,
                   plugins_ok=len(new.active))

    @property
    def version(self) -> int:
        """The store's state version the current snapshot was built for (0 before the
        store could be read)."""
        return max(0, self._version)

    @property
    def _snapshot(self) -> RegistrySnapshot:
        return self._built[0]

    @property
    def _version(self) -> int:
        return self._built[1]

    def current(self, request_id: str | None = None) -> RegistrySnapshot:
        """The snapshot a request must use: built for the store's current state version.

        Read-your-writes for kill switches: one single-row read of the state version per
        request; when another worker or node changed it (a disable, an enable, a quarantine,
        a reload) since this worker's snapshot was built, the request waits for the rebuild
        (the background reloader's, if it is under way) instead of running on stale state.
        """
        self.snapshot()  # without a reloader: the periodic check of the config file
        snapshot, version = self._built
        if self.store.current_state_version() == version:
            return snapshot
        return self.refresh(request_id)

    # -- the store ------------------------------------------------------------------------

    def _open_store(self) -> None:
        """Once: the schema, and the store is the one the marker recorded, not a
        replacement (a store this app created is recorded in the marker)."""
        if self._store_opened:
            return
        with self._open_lock:
            if self._store_opened:
                return
            self.store.ensure_schema()
            if self.marker.expected:
                if self.marker.mismatch(self.store.store_id()) is not None:
                    self.store.health.failed(StoreFault.STORE_REPLACED)
                    raise StoreUnavailable(StoreFault.STORE_REPLACED, self.store.where)
            elif self.store.created_now:
                try:
                    self.marker.note_created(self.store.store_id())
                except OSError:
                    log.warning("cannot write the store marker: a deleted store will not be "
                                "noticed after a restart", extra={"reason": "marker"})
            self._store_opened = True

    def require_store(self) -> None:
        """Raise `StoreUnavailable` unless this worker serves from its store: opened, and
        the registry built from it. A worker that started without its store builds the
        registry here, once the store is back, before it answers."""
        if self._serving:
            return
        now = time.monotonic()
        if self._open_fault is not None and now < self._open_retry_at:
            raise StoreUnavailable(self._open_fault)  # tried less than a second ago
        try:
            self.refresh()
        except StoreUnavailable as exc:
            self._open_fault, self._open_retry_at = exc.fault, now + 1.0
            raise

    def store_status(self) -> dict[str, str] | None:
        """What `/readyz` says about the store: None when a write commits (a heartbeat row
        rewritten in place), else the reason code and a sentence (no path, no data)."""
        try:
            self.require_store()
            self.store.probe_write()
        except StoreUnavailable as exc:
            return {"reason": exc.fault.value,
                    "message": f"{exc.fault.describe()}: {exc.fault.advice()}"}
        self._probe_ok_at = time.monotonic()
        return None

    def audit_status(self) -> dict[str, object]:
        """The audit commits of this worker: waiting, running, and the problem if any (a
        failed commit no longer counts once the readiness probe's write succeeded)."""
        assert self.auditor.log is not None
        return self.auditor.log.group.status(self._probe_ok_at)

    def snapshot(self) -> RegistrySnapshot:
        """The current snapshot (checked for changes first when no reloader runs); requests
        that must see every switch already answered use `current()`."""
        if self._reloader is None and time.monotonic() - self._checked_at >= self.version_ttl_s:
            self._check()
        return self._snapshot

    def current_snapshot(self) -> RegistrySnapshot:
        """The current snapshot, without checking the store for changes."""
        return self._snapshot

    def _check(self) -> bool:
        """Rebuild if the shared state version, the config file or (with auto_reload) the
        installed distributions changed; True if rebuilt."""
        with self._lock:
            rebuilt = self._rebuild_if_stale(watch_site=True)
            if self._checked_at - self._retention_checked >= 3600:
                self._retention_checked = self._checked_at
                apply_retention(self.auditor, self.config.audit_retention_days, DAY_S,
                                plugin_log_days=self.config.plugin_log_retention_days)
            return rebuilt

    def _reload_loop(self) -> None:
        """Every `min(version_ttl_s, 0.25)` s, or at once when PostgreSQL notifies a new
        state version: check the store, the config file and (auto_reload) site-packages."""
        listener: StateListener | None = None
        retry_at = 0.0
        while not self._stop.is_set():
            interval = min(self.version_ttl_s, 0.25)
            if listener is None and time.monotonic() >= retry_at and not self.store.is_sqlite:
                try:
                    listener = open_listener(self.store)
                except Exception as exc:  # polling goes on; try again later
                    retry_at = time.monotonic() + LISTEN_RETRY_S
                    log.warning("cannot LISTEN for state changes, polling only: %s",
                                type(exc).__name__, extra={"reason": "listen-failed"})
            if listener is not None:
                try:
                    listener.wait(interval)
                except Exception as exc:
                    listener.close()
                    listener, retry_at = None, time.monotonic() + LISTEN_RETRY_S
                    log.warning("state change listener lost, polling only: %s",
                                type(exc).__name__, extra={"reason": "listen-failed"})
            elif self._stop.wait(interval):
                break
            if self._stop.is_set():
                break
            try:
                self._check()
            except StoreUnavailable:
                pass  # the store's health logs the cause once per change; keep serving
            except Exception as exc:  # keep serving the current snapshot, and say why
                log.error("background reload failed: %s", type(exc).__name__,
                          extra={"reason": "reload-failed"})
        if listener is not None:
            listener.close()

    def reload(self, request_id: str | None = None) -> RegistrySnapshot:
        """Tell every worker sharing the store to rebuild, and rebuild this one now."""
        self.store.bump_state_version()
        return self.refresh(request_id)

    def _site_changed(self) -> bool:
        """With `[plugins] auto_reload`: True once site-packages changed and then held still
        for one check (so a pip install still running is not half-seen)."""
        if not self.config.auto_reload:
            self._site_seen = self._site_built = None
            return False
        stamp = site_stamp()
        if self._site_built is None:  # first check since auto_reload is on
            self._site_seen = self._site_built = stamp
            return False
        settled = stamp == self._site_seen
        self._site_seen = stamp
        if settled and stamp != self._site_built:
            self._site_built = stamp
            return True
        return False

    def _stamp(self) -> tuple[int, int, int, int] | None:
        # the inode tells an atomic replacement (rename) apart even when the size and the
        # mtime (coarse on some filesystems) happen to be equal
        try:
            st = self.config_path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)

    def _reload_config_if_changed(self) -> None:
        """Pick up an edited config file (a CLI approve, disable...); keep the last good one
        if the new one must not be taken (see `config_problem`), and say why."""
        stamp = self._stamp()
        if stamp == self._config_stamp:
            return
        self._config_stamp = stamp
        try:
            config = load_config(self.config_path)
        except ConfigError as exc:
            self._keep_last_good(exc.reason)
            return
        problem = config_problem(config, self.config if self._good_config else None)
        if problem is not None:
            self._keep_last_good(problem)
            return
        # the problem is cleared once the registry is rebuilt from this config: until then
        # /readyz must not say the file on disk is what serves
        self.config, self._good_config = config, True
        self._config_changed = self._file_served_once_built = True

    def _keep_last_good(self, reason: str) -> None:
        """Keep the config in use (the last good one, if there ever was one), and say why."""
        self.config_problem = reason
        self._file_served_once_built = False
        # the reason code only: a parse error's text could quote the file
        log.error("config file not taken, the config in use keeps serving",
                  extra={"reason": reason})
        self.auditor.record("registry.reloaded", "failed", reason=reason)

    def config_status(self) -> dict[str, str] | None:
        """What `/readyz` says about the config file: None when the config in use is the
        file on disk, else its problem's reason code and a sentence (no path, no content)."""
        reason = self.config_problem
        if reason is None:
            return None
        serving = ("the last good config keeps serving" if self._good_config
                   else "no good config was loaded yet: no plugin is approved")
        return {"reason": reason, "message": f"{PROBLEMS[reason]}; {serving}"}

    def note_outcomes(self, outcomes: Iterable[tuple[str, bool]],
                      request_id: str | None = None) -> None:
        """Add one generation's hook outcomes (plugin, ok) to the fleet's counts of
        consecutive failures in the store; the worker whose failure reaches
        `[sandbox] quarantine_after` quarantines the plugin, for every worker of every node
        (`dihya.store.failures`). Writes only when a hook failed, or succeeded while its
        plugin has failures counted; a store that cannot take the write is logged, never
        the generation's failure. The sandbox abuses found since the last call count as
        failed calls of their plugins (`failures.charge`)."""
        changes = failures.batch(failures.charge(outcomes, self.pool.take_abuses()))
        if not changes:
            return
        limit = self.config.sandbox.quarantine_after
        try:
            # a success resets only a count that exists: one small read of those plugins,
            # fresh, so a success right after another worker's failure is never missed
            counted = failures.failing(self.store, (n for n, c in changes.items()
                                                    if not c.failed))
            changes = {n: c for n, c in changes.items() if c.failed or n in counted}
            if not changes:
                return
            quarantined = failures.record(self.store, changes, limit)
        except StoreUnavailable:
            log.warning("cannot count hook failures in the store", extra={"reason": "store"})
            return
        for name in quarantined:
            record = self._snapshot.get(name)
            self.auditor.record("plugin.quarantined", "ok", plugin=name, request_id=request_id,
                                plugin_version=record.version if record else None,
                                reason="consecutive-failures")
        if quarantined:
            self.refresh(request_id)

    def close(self) -> None:
        """Stop the reloader and every sandbox worker."""
        self._stop.set()
        if self._reloader is not None:
            self._reloader.join(timeout=5)
        self.pool.close()
        self.auditor.close()

    def refresh(self, request_id: str | None = None) -> RegistrySnapshot:
        """The snapshot of the store's current state version, rebuilt now unless the
        background reloader already built it (woken by this very change's notification,
        it often has: one rebuild per change, not two)."""
        with self._lock:
            self._rebuild_if_stale(request_id)
            return self._snapshot

    def _rebuild_if_stale(self, request_id: str | None = None,
                          watch_site: bool = False) -> bool:
        """Under `_lock`: rebuild if the store's state version or the config file changed
        (or, with `watch_site`, the installed distributions); True if rebuilt."""
        self._open_store()
        version = self.store.state_version()
        self._reload_config_if_changed()
        installed = watch_site and self._site_changed()
        rebuilt = version != self._version or self._config_changed or installed \
            or self._start_failed
        if rebuilt:
            # the first build from the store after a start without it audits like a start
            self._built = (self._build(self._snapshot if self._serving else None, request_id),
                           version)
            self._serving = True
            self._config_changed = False  # a failed build leaves it set: the next check retries
            if self._file_served_once_built:
                self._file_served_once_built = False
                if self.config_problem is not None:
                    log.info("config file usable again, serving it")
                self.config_problem = None
        self._checked_at = time.monotonic()
        return rebuilt


def _first_config(path: Path, boot_config: Config | None) -> tuple[Config, str | None]:
    """The config a worker starts with, and its problem. There is no last good config yet:
    a missing or empty file is served as it is (nothing approved) but reported. With
    `boot_config` (what `dihya serve` validated when it started: a worker gunicorn restarts
    later gets it), a file the worker cannot use gives that config's settings (store,
    audit key, sandbox) with nothing approved, instead of a worker that cannot start."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        if boot_config is None:
            raise
        return attrs.evolve(boot_config, allow=()), exc.reason
    problem = config_problem(config, None)
    if problem is not None and boot_config is not None:
        return attrs.evolve(boot_config, allow=()), problem
    return config, problem


def _switch_message(code: str, reason: str | None) -> str:
    what = {"disabled-by-admin": "disabled by an admin", "quarantined": "quarantined"}
    text = what.get(code, code)
    return f"{text}: {reason}" if reason else text
