"""The `dihya` command: a thin face over the core functions.

Exit codes: 0 ok, 1 a check failed (unknown plugin, refused approval, invalid needs,
failed verification), 2 usage (bad arguments, malformed config, non-empty OUTDIR).
"""

from __future__ import annotations

import atexit
import contextlib
import getpass
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import attrs
import click

from dihya import __version__
from dihya.audit import Auditor
from dihya.config import (
    EMPTY,
    MISSING,
    MODES,
    ROLES,
    UNREADABLE,
    Config,
    ConfigError,
    load_config,
    resolve_path,
)
from dihya.config.edit import (
    Approval,
    ApprovalRefused,
    add_known_pth,
    edit_document,
    record_approval,
    remove_allow,
    set_enabled,
)
from dihya.config.file import ConfigFileError, ConfigLockTimeout, exposure
from dihya.gate.decide import (
    FAILED,
    REFUSED,
    SHADOWED_MODULE,
    dependency_problems,
    inspect_files,
    resolution_problem,
    shadowing_problem,
)
from dihya.gate.discovery import DiscoveredPlugin, discover
from dihya.gate.fingerprint import FingerprintError, fingerprint_wheel
from dihya.gate.startup import PthFile, known_entry, pth_json, scan_pth, site_directories
from dihya.registry import RegistrySnapshot, build_registry
from dihya.store.marker import StoreMarker

if TYPE_CHECKING:
    from dihya.gate.fingerprint import InstalledFiles
    from dihya.output import OutputError
    from dihya.store import Store


class CheckFailed(click.ClickException):
    """A check failed: exit 1."""

    exit_code = 1


class Usage(click.ClickException):
    """Bad usage or config: exit 2."""

    exit_code = 2


@attrs.define
class State:
    config_path: Path
    warned: bool = False
    _auditor: Auditor | None = None

    def config(self) -> Config:
        try:
            config = load_config(self.config_path)
        except ConfigError as exc:
            raise Usage(str(exc)) from exc
        if not self.warned and (not config.exists or config.empty):
            self.warned = True
            what = "does not exist" if not config.exists else "is empty (no table, no key)"
            click.echo(f"warning: config file {self.config_path} {what}: no plugin is "
                       "approved (pass --config or set DIHYA_CONFIG)", err=True)
        return config

    def registry(self) -> RegistrySnapshot:
        config = self.config()
        store = self.store(config)
        switches = {}
        if store is not None:
            switches = {n: (s.reason_code, f"{s.reason_code}: {s.reason or ''}".rstrip(": "))
                        for n, s in store.plugin_switches().items()}
        # Plugins' import-time prints must not corrupt what this command prints.
        with contextlib.redirect_stdout(sys.stderr):
            snapshot = build_registry(config, switches=switches)
        atexit.register(snapshot.close)  # stop this command's sandbox workers
        return snapshot

    def store(self, config: Config | None = None, create: bool = False) -> Store | None:
        """The state store; None where there is none yet and `create` is not asked.

        Created only with `create`, and only beside a config that exists. A store missing
        where the store marker says one was, or a different store in its place, is an
        error (exit 1) saying what to do — never a new, empty store.
        """
        config = config or self.config()
        url = config.effective_store_url
        marker = self.marker(config)
        file = _sqlite_file(config)
        if file is not None and not file.exists():
            if marker.expected:
                raise CheckFailed(_missing_store(file, marker))
            if not create:
                return None
            if not config.exists:
                raise CheckFailed(f"no config file at {self.config_path}, so no state store "
                                  "is created: the store lives beside the config (or at its "
                                  "[store] url). Pass --config or set DIHYA_CONFIG, or write "
                                  "the config first (`dihya plugins approve NAME` writes "
                                  "one)")
        from dihya.store import Store, StoreError, StoreMissing, StoreUnavailable

        try:
            store = Store(url, create=create and not marker.expected,
                          synchronous=config.store_synchronous)
            store.ensure_schema()
            problem = marker.mismatch(store.store_id()) if marker.expected else None
        except StoreMissing as exc:
            if marker.expected:
                raise CheckFailed(f"{exc}; but {marker.describe()}: restore the store from "
                                  "a backup, or, to start an empty one on purpose, delete "
                                  f"{marker.path}") from exc
            return None
        except StoreUnavailable as exc:
            raise CheckFailed(str(exc)) from exc
        except StoreError as exc:
            raise Usage(str(exc)) from exc
        if problem is not None:
            raise CheckFailed(problem)
        if store.created_now:
            try:
                marker.note_created(store.store_id())
            except OSError as exc:
                click.echo(f"warning: cannot write the store marker {marker.path} "
                           f"({exc.strerror}): a deleted store will not be noticed", err=True)
        return store

    def marker(self, config: Config | None = None) -> StoreMarker:
        config = config or self.config()
        return StoreMarker.for_config(self.config_path, config.effective_store_url)

    def auditor(self) -> Auditor:
        """The audit door, writing to the store (created if needed)."""
        if self._auditor is None:
            config = self.config()
            self._auditor = Auditor(config.audit_key, store=self.store(config, create=True),
                                    marker=self.marker(config))
        return self._auditor

    def existing_auditor(self) -> Auditor | None:
        """The audit door of the store if it exists; None (and nothing created) if not."""
        if self._auditor is None:
            config = self.config()
            store = self.store(config)
            if store is None:
                return None
            self._auditor = Auditor(config.audit_key, store=store, marker=self.marker(config))
        return self._auditor


def _missing_store(file: Path, marker: StoreMarker) -> str:
    return (f"the state store {file} is missing, but {marker.describe()}: it was deleted or "
            "moved. Restore it from a backup (with its -wal file, if there is one) or put it "
            "back, then retry; to start an empty store on purpose (every token, runtime "
            f"switch and audit event of the old one is lost), delete {marker.path}")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid-{os.getuid()}"


pass_state = click.make_pass_decorator(State)


class _Group(click.Group):
    """The `dihya` group: a store that fails under a command (read-only, full, deleted,
    unreachable) ends it with exit 1 and the cause in words, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from dihya.store.faults import StoreUnavailable

        try:
            return super().invoke(ctx)
        except StoreUnavailable as exc:
            raise CheckFailed(str(exc)) from exc


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="Backend config (TOML). Default: $DIHYA_CONFIG, else ./dihya.toml.")
@click.option("-v", "--verbose", is_flag=True, help="Log what the core does to stderr.")
@click.version_option(__version__, prog_name="dihya")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, verbose: bool) -> None:
    """Dihya Coding: generate code, with plugins only an operator approved."""
    from dihya.audit.logs import configure

    configure(sys.stderr, logging.INFO if verbose else logging.WARNING)
    # SIGTERM ends a command the way Ctrl-C does: exit handlers run, so its sandbox
    # workers stop and their scratch directories are removed
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    ctx.obj = State(resolve_path(config_path))


def _exit_on_sigterm(signum: int, _frame: object) -> NoReturn:
    raise SystemExit(128 + signum)


@main.group()
def plugins() -> None:
    """Discover, approve, switch and verify generation plugins."""


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _unknown(name: str, known: Sequence[str]) -> NoReturn:
    listing = ", ".join(sorted(set(known))) or "none installed"
    raise CheckFailed(f"no plugin named {name!r} is installed (known: {listing})")


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@pass_state
def list_plugins(state: State, as_json: bool) -> None:
    """List every installed plugin with its status."""
    snapshot = state.registry()
    if as_json:
        # the array has no room for facts about the environment: every row carries them
        _echo_json([_with_pth(r.to_json(), snapshot) for r in snapshot.records])
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"plugins ({snapshot.config.path})")
    for column in ("name", "status", "reason", "mode", "version", "distribution", "hooks"):
        table.add_column(column, overflow="fold")
    colors = {"active": "green", "disabled": "yellow", "refused": "red", "failed": "red"}
    for r in snapshot.records:
        table.add_row(r.name, f"[{colors.get(r.status, 'white')}]{r.status}[/]",
                      r.reason or "", r.mode or "", r.version, r.distribution,
                      ", ".join(r.hooks))
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    if not snapshot.records:
        click.echo("no plugin installed in group " + snapshot.config.group)
    _warn_pth(snapshot)


def _with_pth(data: dict[str, Any], snapshot: RegistrySnapshot) -> dict[str, Any]:
    data["pth"] = pth_json(snapshot.pth)
    return data


def _warn_pth(snapshot: RegistrySnapshot) -> None:
    for pth in snapshot.pth:
        if not pth.acknowledged:
            click.echo(f"warning: {pth.describe()}", err=True)


@plugins.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@pass_state
def show(state: State, name: str, as_json: bool) -> None:
    """Show everything known about one plugin."""
    snapshot = state.registry()
    record = snapshot.get(name)
    if record is None:
        _unknown(name, snapshot.names())
    data = record.to_json()
    if as_json:
        _echo_json(_with_pth(data, snapshot))
        return
    data["actions"] = [a["name"] for a in data["actions"]]  # schemas: see --json
    for key, value in data.items():
        if isinstance(value, list):
            value = ", ".join(map(str, value)) or "-"
        click.echo(f"{key:>21}: {'-' if value is None else value}")
    for pth in snapshot.pth or [None]:
        click.echo(f"{'pth':>21}: {pth.describe() if pth else '-'}")


@plugins.command("fingerprint")
@click.argument("target")
@pass_state
def fingerprint(state: State, target: str) -> None:
    """Print the fingerprint of an installed plugin (NAME) or of a wheel file (PATH.whl)."""
    if target.endswith(".whl"):
        try:
            click.echo(fingerprint_wheel(Path(target)))
        except FingerprintError as exc:
            raise CheckFailed(str(exc)) from exc
        return
    plugin = _find(state, target)
    files, problem = inspect_files(plugin)
    if files is None:
        reason, message = problem or ("missing-file", "no files")
        raise CheckFailed(f"cannot fingerprint {target!r} ({reason}): {message}")
    click.echo(files.fingerprint)
    if problem is not None:
        raise CheckFailed(f"{target}: {problem[1]}: this install would be refused "
                          f"({problem[0]})")


def _find(state: State, name: str) -> DiscoveredPlugin:
    found = discover(state.config().group)
    matches = [p for p in found if p.name == name]
    if not matches:
        _unknown(name, [p.name for p in found])
    if len(matches) > 1:
        dists = ", ".join(p.distribution for p in matches)
        raise CheckFailed(f"{name!r} is declared by several distributions ({dists}); "
                          "uninstall all but one")
    return matches[0]


@contextmanager
def _editing(state: State) -> Iterator[Any]:
    """A config edit as a transaction (lock, re-read, change, atomic write): the block runs
    under the lock on the file as it is now, so it must be quick (no sandbox check)."""
    try:
        with edit_document(state.config_path) as doc:
            yield doc
    except ConfigError as exc:
        raise Usage(str(exc)) from exc
    except (ConfigLockTimeout, ApprovalRefused) as exc:
        raise CheckFailed(str(exc)) from exc
    except ConfigFileError as exc:
        raise Usage(str(exc)) from exc


def _parse_roles(_ctx: click.Context, _param: click.Parameter,
                 value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    roles = tuple(r.strip() for r in value.split(",") if r.strip())
    bad = [r for r in roles if r not in ROLES]
    if bad or not roles:
        raise click.BadParameter(f"roles must be a comma-separated list of "
                                 f"{', '.join(ROLES)}, not {value!r}")
    return roles


F = TypeVar("F", bound=Callable[..., Any])


def approval_options(command: F) -> F:
    """The options an approval records (`approve`, `install`): mode, roles, required."""
    options = [
        click.option("--mode", type=click.Choice(MODES), default=None,
                     help="Where the plugin runs (default: sandbox, or what a previous "
                          "approval said); in-process only for classes that say safe = True."),
        click.option("--roles", callback=_parse_roles,
                     help="Comma-separated roles for whom the plugin may run (default: every "
                          "role, or what a previous approval said)."),
        click.option("--required/--not-required", default=None,
                     help="Whether a failure of this plugin fails the generation (default: "
                          "no, or what a previous approval said)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@plugins.command("approve")
@click.argument("names", nargs=-1, required=True)
@approval_options
@pass_state
def approve(state: State, names: tuple[str, ...], mode: str | None,
            roles: tuple[str, ...] | None, required: bool | None) -> None:
    """Approve installed plugins as they are now (records name, version, fingerprint).

    Each plugin is loaded once in a separate, isolated process to check its class and
    hooks before it is approved. Re-approving keeps the previous mode, roles, required and
    on/off switch unless options say otherwise. All or nothing: if one NAME cannot be
    approved, the config is left unchanged.
    """
    config = state.config()
    found = discover(config.group)
    approvals = []
    notes = []
    # the checks (seconds: a sandbox worker per plugin) run before the config is locked
    for name in dict.fromkeys(names):
        plugin, files = _approvable(name, found)
        previous = config.entries_for(name)
        check_mode = mode or (previous[0].mode if previous else "sandbox")
        safe = _check_class(plugin, files.fingerprint, check_mode, config)
        for old in previous:
            if old.fingerprint != files.fingerprint:
                notes.append(f"note: {name}'s files changed since the previous approval "
                             f"({old.version} {old.fingerprint[:19]}… -> {plugin.version} "
                             f"{files.fingerprint[:19]}…)")
        approvals.append(Approval(
            name=name, distribution=plugin.distribution, version=plugin.version,
            fingerprint=files.fingerprint, mode=mode,  # type: ignore[arg-type]
            roles=roles, required=required, safe=safe))
    # only the choices given here are applied, to the file as it is once locked: a switch,
    # role or flag changed by another edit during the checks is kept
    with _editing(state) as doc:
        entries = [record_approval(doc, a) for a in approvals]
    auditor = state.auditor()
    for note in notes:
        click.echo(note, err=True)
    for e in entries:
        click.echo(f"approved {e.name} ({e.distribution} {e.version}) {e.fingerprint} "
                   f"mode={e.mode}")
        auditor.record("plugin.approved", "ok", subject=_user(), plugin=e.name,
                       plugin_version=e.version, plugin_fingerprint=e.fingerprint)


def _approvable(name: str, found: Sequence[DiscoveredPlugin]) -> tuple[DiscoveredPlugin,
                                                                        InstalledFiles]:
    """The one installed plugin named `name` and its files, if they may be approved; else
    exit 1."""
    matches = [p for p in found if p.name == name]
    if not matches:
        _unknown(name, [p.name for p in found])
    if len(matches) > 1:
        raise CheckFailed(f"cannot approve {name!r}: declared by "
                          f"{', '.join(p.distribution for p in matches)}")
    plugin = matches[0]
    files, problem = inspect_files(plugin)
    if problem is not None or files is None:
        reason, message = problem or ("missing-file", "no files")
        raise CheckFailed(f"cannot approve {name!r} ({reason}): {message}")
    outside = resolution_problem(plugin, files)
    if outside:
        raise CheckFailed(f"cannot approve {name!r} (outside-distribution): {outside}")
    shadowed = shadowing_problem(plugin, files)
    if shadowed:
        raise CheckFailed(f"cannot approve {name!r} ({SHADOWED_MODULE}): {shadowed}")
    missing = dependency_problems(plugin)
    if missing:
        raise CheckFailed(f"cannot approve {name!r} (missing-dependency): "
                          f"{'; '.join(missing)}")
    return plugin, files


def _check_class(plugin: DiscoveredPlugin, fp: str, mode: str, config: Config) -> bool:
    """Load the plugin in a sandbox worker (never in this process) and check its class;
    True if the class says safe = True (it may run in-process)."""
    from dihya.sandbox.admission import checked_meta
    from dihya.sandbox.pool import Worker, WorkerSpec, WorkerStartError

    try:
        worker = Worker(WorkerSpec(plugin.group, plugin.name, fp), config.sandbox)
    except WorkerStartError as exc:
        raise CheckFailed(f"cannot approve {plugin.name!r}: {exc.reason}: {exc.message}") from exc
    try:
        meta = checked_meta(worker.hello.meta)
    except ValueError as exc:
        raise CheckFailed(f"cannot approve {plugin.name!r}: invalid-plugin: {exc}") from exc
    finally:
        worker.close()
    for warning in meta["deprecations"]:
        click.echo(f"warning: {plugin.name}: {warning}", err=True)
    safe = meta.get("safe") is True
    if mode == "in-process" and not safe:
        raise CheckFailed(f"cannot approve {plugin.name!r} in-process: its class says "
                          "safe = False; approve it with --mode sandbox")
    return safe


@plugins.command("revoke")
@click.argument("name")
@pass_state
def revoke(state: State, name: str) -> None:
    """Remove a plugin's approval: it becomes refused/not-allowlisted."""
    with _editing(state) as doc:
        if not remove_allow(doc, name):
            _not_approved(state, name)
    click.echo(f"revoked {name}")
    state.auditor().record("plugin.revoked", "ok", subject=_user(), plugin=name)


def _not_approved(state: State, name: str) -> NoReturn:
    approved = ", ".join(e.name for e in state.config().allow) or "none"
    raise CheckFailed(f"{name!r} is not in the allowlist of {state.config_path} "
                      f"(approved: {approved})")


def _switch(state: State, name: str, enabled: bool, reason: str | None) -> None:
    with _editing(state) as doc:
        if not set_enabled(doc, name, enabled, reason):
            _not_approved(state, name)
    if enabled:
        # also lift a runtime switch (HTTP disable, quarantine) recorded in the store
        store = state.store()
        if store is not None:
            store.set_plugin_disabled(name, False, actor=state.auditor().pseudonym(_user()))
    click.echo(f"{'enabled' if enabled else 'disabled'} {name}")
    state.auditor().record("plugin.enabled" if enabled else "plugin.disabled", "ok",
                           subject=_user(), plugin=name,
                           reason=None if enabled else "disabled-by-config", note=reason)


@plugins.command("enable")
@click.argument("name")
@pass_state
def enable(state: State, name: str) -> None:
    """Switch an approved plugin back on."""
    _switch(state, name, True, None)


@plugins.command("disable")
@click.argument("name")
@click.option("--reason", help="Why, recorded in the config beside the switch.")
@pass_state
def disable(state: State, name: str, reason: str | None) -> None:
    """Switch an approved plugin off (it stays approved)."""
    _switch(state, name, False, reason)


@plugins.command("reload")
@pass_state
def reload(state: State) -> None:
    """Tell every running backend sharing the state store to rebuild its plugin registry.

    Goes through the store (no server address needed): each server worker sees the new
    state version within a second, rediscovers, verifies and loads, and swaps the new
    registry in; generations under way finish on the one they started with.
    """
    state.config()  # a malformed config: exit 2 before telling servers to load it
    store = state.store(create=True)
    assert store is not None
    store.bump_state_version()
    version = store.state_version()
    state.auditor().record("registry.reloaded", "ok", subject=_user())
    click.echo(f"reload requested (state version {version}); running servers rebuild within "
               "a second")


@plugins.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@pass_state
def verify(state: State, as_json: bool) -> None:
    """Check every allowlisted plugin; exit 1 if one is refused, failed or missing.

    Also exit 1 when the config is missing, unreadable or empty, or allowlists nothing
    while plugins are installed; warn (exit 0) when the config or the SQLite store file is
    open to other users.
    """
    config, rows = _config_checks(state)
    failed = next((r for r in rows if not r["ok"]), None)
    if config is not None and failed is None:
        rows += _plugin_checks(state)
    if config is not None:  # facts of the environment, whatever the allowlist says
        rows += [_pth_row(pth) for pth in scan_pth(config.known_pth)]
    if as_json:
        _echo_json(rows)
    else:
        for row in rows:
            if row is failed and row["check"] != "plugin":
                continue  # said once, on stderr, by the error below
            mark = {"warning": "warn"}.get(row["status"], "ok  " if row["ok"] else "FAIL")
            if row["check"] != "plugin":
                click.echo(f"{mark} {row['check']}: {row['message']}")
                continue
            reason = f"/{row['reason']}" if row["reason"] else ""
            click.echo(f"{mark} {row['name']}: {row['status']}{reason} {row['message']}")
    if failed is not None and failed["check"] != "plugin":
        raise CheckFailed(failed["message"])
    if not all(row["ok"] for row in rows):
        sys.exit(1)


def _check_row(check: str, status: str, reason: str | None, message: str,
               ok: bool, name: str | None = None) -> dict[str, Any]:
    """One row of `plugins verify`: `check` is "plugin" (a row per allowlisted plugin),
    "config", "allowlist", "store" or "pth"."""
    return {"name": name, "check": check, "status": status, "reason": reason,
            "message": message, "ok": ok}


def _config_checks(state: State) -> tuple[Config | None, list[dict[str, Any]]]:
    """The config-wide rows of `verify`: can the config be used, does it allowlist
    anything while plugins are installed, who else may read or write it and the store.
    A malformed or invalid config is a usage error (exit 2), as for every command."""
    path = state.config_path
    try:
        config = load_config(path)
    except ConfigError as exc:
        if exc.reason != UNREADABLE:
            raise Usage(str(exc)) from exc
        return None, [_check_row("config", "failed", UNREADABLE, f"{exc}: make it readable "
                                 "by this user (and by the server's)", False)]
    rows = [_check_row(what, "warning", "file-permissions", problem, True)
            for what, file in (("config", path), ("store", _sqlite_file(config)))
            if file is not None for problem in exposure(file, what)]
    if not config.exists:
        return config, [*rows, _check_row(
            "config", "failed", MISSING, f"nothing to verify: {path} does not exist (pass "
            "--config or set DIHYA_CONFIG; `dihya plugins approve NAME` creates it)", False)]
    if config.empty:
        rows.append(_check_row(
            "config", "failed", EMPTY, f"{path} is empty (no table, no key): it approves "
            "nothing. If it was emptied by accident, restore it (running servers keep their "
            "last good config meanwhile); to approve nothing on purpose, write `[plugins]` "
            "and `allow = []`", False))
    elif not config.allow:
        installed = sorted({p.name for p in discover(config.group)})
        if installed:
            rows.append(_check_row(
                "allowlist", "failed", "nothing-allowlisted",
                f"{path} allowlists no plugin{' (allow = [])' if config.allow_declared else ''}"
                f" while {len(installed)} are installed "
                f"({', '.join(installed)}): every one is refused. Approve those you reviewed "
                "(`dihya plugins approve NAME`) and uninstall the others (`dihya plugins "
                "uninstall NAME`)", False))
        else:
            rows.append(_check_row("allowlist", "ok", None, "no plugin is allowlisted and "
                                   "none is installed", True))
    return config, rows


def _sqlite_file(config: Config) -> Path | None:
    url = config.effective_store_url
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


def _plugin_checks(state: State) -> list[dict[str, Any]]:
    """A row per allowlisted plugin: ok when active or disabled."""
    snapshot = state.registry()
    rows = []
    for entry in snapshot.config.allow:
        record = snapshot.get(entry.name)
        if record is None:
            rows.append(_check_row("plugin", "missing", "not-installed",
                                   f"approved but not installed ({entry.distribution} "
                                   f"{entry.version})", False, entry.name))
            continue
        ok = record.status not in (REFUSED, FAILED)
        row = _check_row("plugin", record.status, record.reason, record.message, ok,
                         record.name)
        rows.append({**row, "worker_user": record.worker_user})
    return rows


UNACKNOWLEDGED_PTH = "unacknowledged-pth"


def _pth_row(pth: PthFile) -> dict[str, Any]:
    """A `verify` row for a `.pth` file that runs code: ok only when acknowledged."""
    return {"name": pth.file, "check": "pth",
            "status": "acknowledged" if pth.acknowledged else "unacknowledged",
            "reason": None if pth.acknowledged else UNACKNOWLEDGED_PTH,
            "message": pth.describe(), "ok": pth.acknowledged, **pth.to_json()}


@plugins.command("acknowledge-pth")
@click.argument("files", nargs=-1, required=True)
@click.option("--note", help="Why this file may run at interpreter start (kept in the config).")
@pass_state
def acknowledge_pth(state: State, files: tuple[str, ...], note: str | None) -> None:
    """Acknowledge .pth files that run code at interpreter start, as they are now.

    FILE is a path, or a file name as `plugins verify` lists it (every code-running .pth of
    that name). The config records the name and the SHA-256 of the content
    ([[plugins.known_pth]]), keeping its comments: an edited file is no longer acknowledged.
    Review the file, and the modules its `import` lines load, first.
    """
    config = state.config()
    found = scan_pth(config.known_pth)
    chosen: list[PthFile] = []
    for target in dict.fromkeys(files):
        chosen += [p for p in _pth_matches(found, target) if p not in chosen]
    try:
        entries = [known_entry(p, note) for p in chosen]
    except ValueError as exc:
        raise CheckFailed(str(exc)) from exc
    with _editing(state) as doc:
        added = [add_known_pth(doc, entry) for entry in entries]
    auditor = state.auditor()
    for pth, new in zip(chosen, added, strict=True):
        click.echo(f"{'acknowledged' if new else 'already acknowledged'} {pth.path} "
                   f"({pth.owner or 'no owner'}) sha256 {pth.sha256}")
        auditor.record("pth.acknowledged", "ok", subject=_user(), pth_file=pth.file,
                       pth_sha256=pth.sha256)


def _pth_matches(found: Sequence[PthFile], target: str) -> list[PthFile]:
    """The code-running .pth files `target` names (a path, or a bare file name)."""
    if "/" not in target and os.sep not in target:
        matches = [p for p in found if p.file == target]
    else:
        real = os.path.realpath(target)
        matches = [p for p in found if os.path.realpath(p.path) == real]
    if matches:
        return matches
    where = ", ".join(site_directories()) or "none"
    listing = ", ".join(p.path for p in found) or "none"
    if os.path.isfile(target) and target.endswith(".pth"):
        raise CheckFailed(f"{target} runs no code at interpreter start (no line starts with "
                          "`import`) or is not in a site directory of this interpreter "
                          f"({where}): there is nothing to acknowledge")
    raise CheckFailed(f"no .pth file that runs code is named {target!r} in this interpreter's "
                      f"site directories ({where}); those that run code: {listing}")


@main.command()
@click.argument("needs_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", "outdir", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Directory to write: a new or empty one, else see --force and --update.")
@click.option("--force", is_flag=True,
              help="Replace OUTDIR if dihya generated it and nothing in it changed since "
                   "(its .dihya-manifest.json says); refuses, naming them, if it holds other "
                   "files.")
@click.option("--update", is_flag=True,
              help="Like --force, but keep the files you added to OUTDIR (a .venv, notes); "
                   "a generated file you edited is still refused.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_state
def generate(state: State, needs_file: Path, outdir: Path, force: bool, update: bool,
             as_json: bool) -> None:
    """Generate a project from NEEDS_FILE (JSON) into OUTDIR, with the active plugins.

    OUTDIR is written as a whole, atomically, with a manifest of its files
    (.dihya-manifest.json); never the current directory, your home or /.
    """
    from dihya.needs import NeedsError
    from dihya.output import OutputError, prepare_outdir, replace_mode, write_tree
    from dihya.pipeline import GenerationFailed, run_generation

    try:
        _notes(prepare_outdir(outdir, replace_mode(force, update)))
    except OutputError as exc:
        raise _output_failed(exc) from exc
    needs = _read_json(needs_file)
    snapshot = state.registry()
    emit: Callable[[dict[str, Any]], None] = _echo_json if as_json else _echo_report
    try:
        with contextlib.redirect_stdout(sys.stderr):
            result = run_generation(needs, snapshot)
    except NeedsError as exc:
        emit({"error": "invalid-needs", "problems": [attrs.asdict(p) for p in exc.problems]})
        raise CheckFailed(f"{needs_file}: {len(exc.problems)} problem(s) in the needs") from exc
    except GenerationFailed as exc:
        emit({"error": f"generation-failed:{exc.stage}",
              "problems": [attrs.asdict(p) for p in exc.problems],
              "plugins": [h.to_json() for h in exc.plugins]})
        raise CheckFailed(f"generation failed: {exc}") from exc
    try:
        written = write_tree(result.files, outdir, force=force, keep_added=update)
    except OutputError as exc:
        raise _output_failed(exc) from exc
    except (OSError, UnicodeError) as exc:
        # the disk, permissions, a name the filesystem refuses: one line, never a traceback
        # (write_tree wrote nothing: its temporary directory is removed)
        emit({"error": "write-failed", "message": _one_line(exc),
              "plugins": [h.to_json() for h in result.plugins]})
        raise CheckFailed(f"cannot write {outdir}: {_one_line(exc)}") from exc
    _notes(written.recovered)
    emit({"outdir": str(outdir), "files": written.files, "kept": written.kept,
          "plugins": [h.to_json() for h in result.plugins],
          "needs_sha256": result.needs_sha256, "ms": round(result.ms, 1)})


def _notes(lines: list[str]) -> None:
    for line in lines:
        click.echo(f"note: {line}", err=True)


def _output_failed(exc: OutputError) -> click.ClickException:
    """Exit 2 for a refusal (what was asked), 1 for a failed write; OUTDIR is as it was."""
    _notes(exc.recovered)
    return (Usage if exc.usage else CheckFailed)(str(exc))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64),
              help="gunicorn worker processes.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Requests each worker answers at once (more than 1: gunicorn's gthread "
                   "worker); concurrent requests of a worker share their audit commits.")
@pass_state
def serve(state: State, host: str, port: int, workers: int, threads: int) -> None:
    """Serve the HTTP API under gunicorn until interrupted.

    Creates the state store if there is none (and the store marker does not say one was
    there: then exit 1); the workers themselves never create it.
    """
    state.config()  # fail fast, with exit 2, on a malformed config
    state.store(create=True)
    from dihya.web.serve import serve as run_server

    run_server(str(state.config_path), host, port, workers, threads=threads)


@main.group()
def tokens() -> None:
    """Create, list and revoke API tokens (stored only as hashes)."""


@tokens.command("create")
@click.option("--role", required=True, type=click.Choice(ROLES))
@click.option("--name", required=True, help="Who or what the token is for (unique).")
@pass_state
def tokens_create(state: State, role: str, name: str) -> None:
    """Create a token; it is printed once, alone on the last line."""
    from dihya.store.tokens import TokenError, create_token

    store = state.store(create=True)
    assert store is not None
    try:
        token = create_token(store, name, role)
    except TokenError as exc:
        raise CheckFailed(str(exc)) from exc
    state.auditor().record("token.created", "ok", subject=_user(), target=name, role=role)
    click.echo(f"created token {name!r} with role {role}; it is shown only now:", err=True)
    click.echo(token)


@tokens.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@pass_state
def tokens_list(state: State, as_json: bool) -> None:
    """List tokens (names, roles, dates; never the secrets)."""
    from dihya.store.tokens import list_tokens

    store = state.store()
    rows = [attrs.asdict(t) for t in list_tokens(store)] if store is not None else []
    for row in rows:
        row.pop("id", None)
    if as_json:
        _echo_json(rows)
        return
    for row in rows:
        click.echo(f"{row['name']:<32} {row['role']:<10} created {_when(row['created_at'])}")
    if not rows:
        click.echo("no token")


@tokens.command("revoke")
@click.argument("name")
@pass_state
def tokens_revoke(state: State, name: str) -> None:
    """Revoke the token named NAME at once."""
    from dihya.store.tokens import revoke_token

    store = state.store()
    if store is None or not revoke_token(store, name):
        raise CheckFailed(f"no token named {name!r} (see `dihya tokens list`)")
    state.auditor().record("token.revoked", "ok", subject=_user(), target=name)
    click.echo(f"revoked token {name!r}")


def _when(ts: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _read_json(path: Path) -> Any:
    from dihya.needs import JsonDepthError, load_json

    try:
        return load_json(path.read_text("utf-8"))
    except JsonDepthError as exc:
        raise CheckFailed(f"{path}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise CheckFailed(f"{path}: not UTF-8 text: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise CheckFailed(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from exc


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, OSError) else f"{type(exc).__name__}: {text}"


def _echo_report(report: dict[str, Any]) -> None:
    if "error" in report:
        for problem in report.get("problems", []):
            click.echo(f"  {problem['path']}: {problem['message']}", err=True)
        for hook in report.get("plugins", []):
            if hook["status"] != "ok":
                click.echo(f"  plugin {hook['name']} {hook['hook']}: {hook['status']} "
                           f"{hook.get('detail', '')}", err=True)
        return
    click.echo(f"wrote {len(report['files'])} files to {report['outdir']}")
    for path in report["files"]:
        click.echo(f"  {path}")
    if report.get("kept"):
        click.echo(f"kept what you added: {', '.join(report['kept'])}")
    if not report["plugins"]:
        click.echo("no plugin ran (none is approved and enabled: see `dihya plugins list`)")
    for hook in report["plugins"]:
        detail = f" ({hook['detail']})" if hook.get("detail") else ""
        click.echo(f"plugin {hook['name']:<16} {hook['hook']:<20} {hook['status']:<14} "
                   f"{hook['ms']:.1f} ms{detail}")


from dihya.cli.audit import audit  # noqa: E402  (it needs the names above)

main.add_command(audit)

from dihya.cli.publish import COMMANDS as PUBLISH_COMMANDS  # noqa: E402  (keygen, sign, ...)

for _command in PUBLISH_COMMANDS:
    plugins.add_command(_command)

from dihya.cli.scaffold import new_command  # noqa: E402  (plugins new)

plugins.add_command(new_command)

if __name__ == "__main__":  # pragma: no cover
    main()
