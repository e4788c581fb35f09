"""`dihya plugins approve|revoke|enable|disable|acknowledge-pth`: the operator's decisions, each a
locked transaction on the config file (`dihya.config.edit`), each audited.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click
from packaging.utils import canonicalize_name

from dihya import approval
from dihya.approval import ApprovalPlan, CannotApprove, plan_approval
from dihya.config import (
    Config,
)
from dihya.config.edit import (
    Approval,
    add_known_pth,
    record_approval,
    record_next_version,
    remove_allow,
    set_enabled,
)
from dihya.gate.decide import PluginNotFound
from dihya.gate.discovery import DiscoveredPlugin
from dihya.gate.signing import SigningError, read_wheel
from dihya.gate.startup import PthFile, known_entry, scan_pth, site_directories
from dihya.reasons import Reason

if TYPE_CHECKING:
    from dihya.store import Store
from dihya.cli._common import (
    CheckFailed,
    State,
    Usage,
    approval_options,
    did_you_mean,
    editing,
    pass_state,
    unknown,
    user,
)


@click.command("approve")
@click.argument("names", nargs=-1, required=True)
@approval_options
@click.option("--wheel", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Approve the version in this wheel file, before it is installed (one "
                   "NAME): added beside the approved version, which keeps running until "
                   "the new one is installed.")
@pass_state
def approve(state: State, names: tuple[str, ...], mode: str | None,
            roles: tuple[str, ...] | None, required: bool | None,
            wheel: Path | None) -> None:
    """Approve installed plugins as they are now (records name, version, fingerprint).

    Each plugin is loaded once in a separate, isolated process to check its class and
    hooks before it is approved. Re-approving keeps the previous mode, roles, required and
    on/off switch unless options say otherwise. All or nothing: if one NAME cannot be
    approved, the config is left unchanged.

    With --wheel, approve the next version of NAME from its wheel file before installing
    it (an upgrade with no gap): its entry is added beside the approved one, with the same
    mode, roles, required and switch unless options say otherwise.
    """
    if wheel is not None:
        _approve_wheel(state, names, wheel, mode, roles, required)
        return
    config = state.config()
    approvals = []
    notes = []
    facts = []
    # the checks (seconds: a sandbox worker per plugin) run before the config is locked
    for name in dict.fromkeys(names):
        plan = _approvable(name, config)
        plugin, fingerprint = plan.plugin, plan.fingerprint
        assert plugin is not None and fingerprint is not None
        click.echo(f"checking {name} ({plugin.distribution} {plugin.version}): loading it in "
                   "an isolated worker process...", err=True)
        checked = _inspect(plugin, fingerprint, mode or plan.default_mode, config)
        safe = checked.safe
        facts.append((plugin, fingerprint, checked.facts))
        for old in plan.previous:
            if old.fingerprint != fingerprint:
                notes.append(f"note: {name}'s files changed since the previous approval "
                             f"({old.version} {old.fingerprint[:19]}… -> {plugin.version} "
                             f"{fingerprint[:19]}…)")
        approvals.append(Approval(
            name=name, distribution=plugin.distribution, version=plugin.version,
            fingerprint=fingerprint, mode=mode,  # type: ignore[arg-type]
            roles=roles, required=required, safe=safe))
    # only the choices given here are applied, to the file as it is once locked: a switch,
    # role or flag changed by another edit during the checks is kept
    with editing(state) as doc:
        entries = [record_approval(doc, a) for a in approvals]
    auditor = state.auditor()  # the store exists from here on
    store = facts_store(state, state.config())
    if store is not None:
        for plugin, fingerprint, found in facts:
            approval.remember_facts(store, plugin, fingerprint, found)
    for note in notes:
        click.echo(note, err=True)
    for e in entries:
        click.echo(f"approved {e.name} ({e.distribution} {e.version}) {e.fingerprint} "
                   f"mode={e.mode}")
        auditor.record("plugin.approved", "ok", subject=user(), plugin=e.name,
                       plugin_version=e.version, plugin_fingerprint=e.fingerprint)


def facts_store(state: State, config: Config) -> Store | None:
    """The store where a check records what the worker said of the plugin: created beside
    an existing config (as the approval's audit event will create it); None where there is
    none to use (the first listing then starts the worker once and records it)."""
    if not config.exists:
        return None
    try:
        return state.store(config, create=True)
    except click.ClickException:
        return None  # the audit event says why, once the approval is written


def _approve_wheel(state: State, names: tuple[str, ...], wheel: Path, mode: str | None,
                   roles: tuple[str, ...] | None, required: bool | None) -> None:
    """`approve NAME --wheel X.whl`: the next version, from its wheel, beside the current."""
    if len(names) != 1:
        raise Usage("--wheel approves one plugin: give exactly one NAME")
    name = names[0]
    config = state.config()
    try:
        facts = read_wheel(wheel)
    except SigningError as exc:
        raise CheckFailed(f"cannot approve {name!r} from {wheel} ({exc.reason}): "
                          f"{exc.message}") from exc
    declared = sorted(facts.entry_points.get(config.group, {}))
    if name not in declared:
        raise CheckFailed(f"{wheel.name} ({facts.distribution} {facts.version}) does not "
                          f"declare the plugin {name!r} in the group {config.group!r} "
                          f"(it declares: {', '.join(declared) or 'none'})")
    previous = config.entries_for(name)
    for old in previous:
        if canonicalize_name(old.distribution) != canonicalize_name(facts.distribution):
            raise CheckFailed(f"cannot approve {name!r} ({Reason.DISTRIBUTION_MISMATCH}): it "
                              f"is approved from {old.distribution!r}, the wheel is "
                              f"{facts.distribution!r}; revoke {name!r} first")
    effective = mode or (previous[0].mode if previous else "sandbox")
    if effective == "in-process" and not any(e.mode == "in-process" for e in previous):
        raise CheckFailed(f"cannot approve {name!r} in-process from a wheel: its class cannot "
                          "be checked before it is installed. Approve it with --mode sandbox, "
                          "or install it and run `dihya plugins approve NAME --mode in-process`")
    # in-process only where the previous version was approved in-process (its class said
    # safe = True); the gate checks the new class when it loads (unsafe-in-process)
    approval = Approval(name=name, distribution=facts.distribution, version=facts.version,
                        fingerprint=facts.fingerprint, mode=mode,  # type: ignore[arg-type]
                        roles=roles, required=required, safe=True)
    with editing(state) as doc:
        entry = record_next_version(doc, approval)
    kept = [e.version for e in previous if e.version != entry.version]
    click.echo(f"approved {entry.name} ({entry.distribution} {entry.version}, from "
               f"{wheel.name}) {entry.fingerprint} mode={entry.mode}"
               + (f"; still approved: {', '.join(kept)}" if kept else ""))
    state.auditor().record("plugin.approved", "ok", subject=user(), plugin=entry.name,
                           plugin_version=entry.version, plugin_fingerprint=entry.fingerprint,
                           reason="from-wheel")


def _approvable(name: str, config: Config) -> ApprovalPlan:
    """What approving the one installed plugin `name` would record, if it may be approved
    (the gate's own checks, as the console's approval); else exit 1."""
    try:
        plan = plan_approval(name, config)
    except CannotApprove as exc:
        cause = exc.__cause__
        if isinstance(cause, PluginNotFound):
            unknown(name, cause.installed)
        raise CheckFailed(f"cannot approve {name!r} ({exc.reason}): {exc.message}") from exc
    if plan.problem is not None:
        reason, message = plan.problem
        raise CheckFailed(f"cannot approve {name!r} ({reason}): {message}")
    return plan


def _inspect(plugin: DiscoveredPlugin, fp: str, mode: str,
             config: Config) -> approval.CheckedClass:
    """`approval.inspect_class`, printing its deprecation warnings; exit 1 if the plugin
    cannot be approved."""
    try:
        return approval.inspect_class(
            plugin, fp, mode, config,
            warn=lambda w: click.echo(f"warning: {plugin.name}: {w}", err=True))
    except CannotApprove as exc:
        raise CheckFailed(f"cannot approve {plugin.name!r} ({exc.reason}): "
                          f"{exc.message}") from exc


def check_class(plugin: DiscoveredPlugin, fp: str, mode: str, config: Config,
                facts: Store | None = None) -> bool:
    """Load the plugin in a sandbox worker (never in this process) and check its class,
    printing its deprecation warnings; True if the class says safe = True. Exit 1 if it
    cannot be approved. `facts`: where to record what the worker said (listings read it)."""
    try:
        return approval.check_class(
            plugin, fp, mode, config,
            warn=lambda w: click.echo(f"warning: {plugin.name}: {w}", err=True), facts=facts)
    except CannotApprove as exc:
        raise CheckFailed(f"cannot approve {plugin.name!r} ({exc.reason}): "
                          f"{exc.message}") from exc


@click.command("revoke")
@click.argument("name")
@click.option("--version", "version", default=None,
              help="Revoke only the approval of this version (e.g. the previous one, kept "
                   "as the way back after an upgrade).")
@pass_state
def revoke(state: State, name: str, version: str | None) -> None:
    """Remove a plugin's approval: it becomes refused/not-allowlisted."""
    with editing(state) as doc:
        if not remove_allow(doc, name, version):
            if version is not None and state.config().entries_for(name):
                approved = ", ".join(e.version for e in state.config().entries_for(name))
                raise CheckFailed(f"{name} {version} is not approved (approved versions: "
                                  f"{approved})")
            _not_approved(state, name)
    click.echo(f"revoked {name}" + (f" {version}" if version else ""))
    state.auditor().record("plugin.revoked", "ok", subject=user(), plugin=name,
                           plugin_version=version)


def _not_approved(state: State, name: str) -> NoReturn:
    names = [e.name for e in state.config().allow]
    approved = ", ".join(dict.fromkeys(names)) or "none"
    raise CheckFailed(f"{name!r} is not in the allowlist of {state.config_path}"
                      f"{did_you_mean(name, names)} (approved: {approved})")


def _switch(state: State, name: str, enabled: bool, reason: str | None) -> None:
    with editing(state) as doc:
        if not set_enabled(doc, name, enabled, reason):
            _not_approved(state, name)
    if enabled:
        # also lift a runtime switch (HTTP disable, quarantine) recorded in the store
        store = state.store()
        if store is not None:
            store.set_plugin_disabled(name, False, actor=state.auditor().pseudonym(user()))
    click.echo(f"{'enabled' if enabled else 'disabled'} {name}")
    state.auditor().record("plugin.enabled" if enabled else "plugin.disabled", "ok",
                           subject=user(), plugin=name,
                           reason=None if enabled else "disabled-by-config", note=reason)


@click.command("enable")
@click.argument("name")
@pass_state
def enable(state: State, name: str) -> None:
    """Switch an approved plugin back on."""
    _switch(state, name, True, None)


@click.command("disable")
@click.argument("name")
@click.option("--reason", help="Why, recorded in the config beside the switch.")
@pass_state
def disable(state: State, name: str, reason: str | None) -> None:
    """Switch an approved plugin off (it stays approved)."""
    _switch(state, name, False, reason)


@click.command("acknowledge-pth")
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
    with editing(state) as doc:
        added = [add_known_pth(doc, entry) for entry in entries]
    auditor = state.auditor()
    for pth, new in zip(chosen, added, strict=True):
        click.echo(f"{'acknowledged' if new else 'already acknowledged'} {pth.path} "
                   f"({pth.owner or 'no owner'}) sha256 {pth.sha256}")
        auditor.record("pth.acknowledged", "ok", subject=user(), pth_file=pth.file,
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
