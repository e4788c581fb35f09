"""`dihya plugins keygen|sign|install|uninstall|rollback`: publisher signatures, one-command
installs and the way back.

A publisher runs `keygen` once and `sign` per release; an operator lists the publisher in
`[[plugins.publishers]]` and runs `install WHEEL` (the `WHEEL.sig` beside it is used). An
install verifies everything it can before pip runs, installs with `--no-deps` into this
interpreter's environment, checks the installed files against the wheel's fingerprint,
loads the plugin once in a sandbox worker (as `approve` does), then records the allowlist
entry, audits and bumps the store's state version so running servers reload. Any refusal
leaves nothing installed and the config unchanged. An install that replaces an installed
version first keeps that version as a wheel in the user's cache
(`dihya.authoring.wheelcache`): when the new version's post-install check fails, the kept
one is installed again (audited `plugin.rolled-back`); `rollback NAME` goes back to it on
purpose. A signed install also keeps its signature in that cache, so a rollback to that
version records its publisher again when the kept signature still verifies
(`wheelcache.verify_kept_signature`).

Exit codes as everywhere: 0 ok, 1 refused, 2 usage.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import click
from packaging.utils import canonicalize_name

from dihya.authoring import wheelcache
from dihya.authoring.install import (
    CORE_DISTRIBUTION,
    InstallPlan,
    InstallRefused,
    installed_fingerprint,
    installed_fingerprint_problem,
    installed_plugins,
    installed_version,
    pip_install,
    pip_uninstall,
    plan_install,
)
from dihya.cli._common import (
    CheckFailed,
    State,
    Usage,
    approval_options,
    editing,
    tell_servers,
    unknown,
    user,
)
from dihya.cli.approve import check_class, facts_store
from dihya.config import Config
from dihya.config.edit import Approval, record_approval, record_next_version, remove_allow
from dihya.config.publishers import Publisher
from dihya.gate.discovery import DiscoveredPlugin, discover
from dihya.gate.signing import (
    SigningError,
    WheelFacts,
    generate_key,
    load_private_key,
    read_wheel,
    sign_wheel,
)

pass_state = click.make_pass_decorator(State)


@click.command("keygen")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the private key (created with mode 0600; never "
                   "overwritten). Default: $XDG_CONFIG_HOME/dihya/keys/NAME.key, else "
                   "~/.config/dihya/keys/NAME.key.")
@click.option("--name", default="publisher", show_default=True,
              help="The key's file name in the default directory (NAME.key).")
@click.option("--allow-in-repo", is_flag=True,
              help="Write the key inside a git work tree all the same (it is refused "
                   "there: one `git add .` would publish it).")
def keygen(out: Path | None, name: str, allow_in_repo: bool) -> None:
    """Make a publisher key pair: write the private key, print the public key.

    The private key goes under your config directory (mode 0600, directory 0700) unless
    --out says otherwise; a path inside a git work tree is refused (exit 2) without
    --allow-in-repo.
    """
    from dihya.authoring.places import git_work_tree, key_dir

    if out is None:
        if not name or "/" in name or name.startswith("."):
            raise Usage(f"--name {name!r}: a plain file name, such as `acme`")
        out = key_dir() / f"{name}.key"
        try:
            out.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise Usage(f"cannot create {out.parent}: {exc.strerror}; pass --out PATH") from exc
    tree = git_work_tree(out)
    if tree is not None and not allow_in_repo:
        raise Usage(f"{out} is inside the git work tree {tree}: a private key there is one "
                    "`git add` away from being published. Leave out --out (the key then goes "
                    f"to {key_dir()}), choose a path outside the tree, or pass --allow-in-repo")
    try:
        public = generate_key(out)
    except SigningError as exc:
        raise CheckFailed(str(exc)) from exc
    click.echo(f"wrote the private key to {out} (mode 0600): keep it secret and out of "
               "version control; anyone holding it can sign as you", err=True)
    click.echo("give operators this public key for their [[plugins.publishers]] entry:",
               err=True)
    click.echo(public)


@click.command("sign")
@click.argument("wheel", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--key", "key_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The private key written by `dihya plugins keygen`.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the signature (default: WHEEL.sig).")
def sign(wheel: Path, key_path: Path, out: Path | None) -> None:
    """Sign WHEEL: its name, version, sha256 and content fingerprint."""
    try:
        key = load_private_key(key_path)
        target, content = sign_wheel(wheel, key, out)
    except SigningError as exc:
        raise CheckFailed(str(exc)) from exc
    doc = content["signed"]
    click.echo(f"signed {doc['distribution']} {doc['version']}")
    click.echo(f"  wheel sha256  {doc['wheel_sha256']}")
    click.echo(f"  fingerprint   {doc['fingerprint']}")
    click.echo(f"  public key    {content['public_key']}")
    click.echo(f"wrote {target}")


@click.command("install")
@click.argument("wheel", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--signature", "signature", type=click.Path(dir_okay=False, path_type=Path),
              help="The publisher's signature (default: WHEEL.sig if it exists).")
@click.option("--approve", is_flag=True,
              help="Install and approve an unsigned wheel (after checking its fingerprint), "
                   "or accept a publisher change or a downgrade.")
@approval_options
@pass_state
def install(state: State, wheel: Path, signature: Path | None, approve: bool,
            mode: str | None, roles: tuple[str, ...] | None, required: bool | None) -> None:
    """Verify, install and approve a plugin wheel in this backend's environment.

    Signed wheels are checked against [[plugins.publishers]]; an unsigned wheel needs
    --approve. The wheel's requirements must already be installed (nothing else is
    fetched). Refused: nothing is installed and the config is left unchanged (exit 1).
    """
    config = state.config()
    if signature is None:
        beside = wheel.with_name(wheel.name + ".sig")
        if beside.exists():
            signature = beside
            click.echo(f"using the signature {beside}", err=True)
    elif not signature.exists():
        raise Usage(f"--signature {signature}: no such file")
    with tempfile.TemporaryDirectory(prefix="dihya-install-") as tmp:
        # verify and install one private copy, so the file cannot change in between
        staged = Path(tmp) / wheel.name
        shutil.copyfile(wheel, staged)
        try:
            plan = plan_install(staged, config, signature, approve)
        except InstallRefused as exc:
            _refuse(state, exc, installed=False)
        _describe(plan)
        was = installed_version(plan.facts.distribution)
        # the way back: the installed version, kept as a wheel before it is replaced
        kept = None
        if was is not None:
            was_fp = installed_fingerprint(plan.facts.distribution, config.group)
            if was_fp is not None and was_fp != plan.facts.fingerprint:
                kept = wheelcache.keep_installed(plan.facts.distribution, was_fp)
        try:
            pip_install(staged)
        except InstallRefused as exc:
            _refuse(state, exc, installed=False, plan=plan)
    problem = installed_fingerprint_problem(plan, config.group)
    if problem:
        restored = _undo(state, plan, kept, "fingerprint-mismatch")
        _refuse(state, InstallRefused("fingerprint-mismatch", problem, plan.names),
                installed=True, plan=plan, was=was, restored=restored)
    approvals = []
    for name in plan.names:
        prev = [e for e in plan.previous if e.name == name]
        chosen_mode = mode or (prev[0].mode if prev else "sandbox")
        (plugin,) = [p for p in installed_plugins(plan.facts.distribution, config.group)
                     if p.name == name]
        try:
            safe = check_class(plugin, plan.facts.fingerprint, chosen_mode, config,
                               facts=facts_store(state, config))
        except CheckFailed as exc:
            restored = _undo(state, plan, kept, "invalid-plugin")
            _refuse(state, InstallRefused("invalid-plugin", exc.message, plan.names),
                    installed=True, plan=plan, was=was, restored=restored)
        # only this install's choices: what the file says once locked is kept otherwise
        approvals.append(Approval(
            name=name, distribution=plan.facts.distribution, version=plan.facts.version,
            fingerprint=plan.facts.fingerprint, mode=mode,  # type: ignore[arg-type]
            roles=roles, required=required, publisher=plan.publisher, safe=safe))
    try:
        with editing(state) as doc:
            entries = [record_approval(doc, a) for a in approvals]
    except BaseException:
        _undo(state, plan, kept, "config-edit-failed")
        raise
    how = f"signed by {plan.publisher}" if plan.publisher else "unsigned, approved by you"
    for e in entries:
        old = next((p for p in plan.previous if p.name == e.name), None)
        upgrade = f" (was {old.version})" if old and old.version != e.version else ""
        click.echo(f"installed and approved {e.name} ({e.distribution} {e.version}{upgrade}, "
                   f"{how}) {e.fingerprint} mode={e.mode}")
    auditor = state.auditor()
    for e in entries:
        auditor.record("plugin.installed", "ok", subject=user(), plugin=e.name,
                       plugin_version=e.version, plugin_fingerprint=e.fingerprint,
                       reason="signed" if plan.publisher else "unsigned-approved")
    if kept is not None:
        click.echo(f"kept {plan.facts.distribution} {was} as {kept}: `dihya plugins rollback "
                   f"{plan.names[0]}` goes back to it")
    if plan.verified is not None and signature is not None:
        _keep_signature(plan, signature)


def _keep_signature(plan: InstallPlan, signature: Path) -> None:
    """Keep the signature this version was installed with in the wheel cache, so a later
    rollback to it can name its publisher again; a failure costs only that (said on
    stderr), never the install."""
    try:
        wheelcache.keep_signature(plan.facts, signature)
    except OSError as exc:
        click.echo(f"warning: could not keep the signature {signature} in "
                   f"{wheelcache.cache_root()} ({exc.strerror or exc}): a rollback to "
                   f"{plan.facts.distribution} {plan.facts.version} will be recorded as "
                   "approved by you, not by its publisher", err=True)


def _describe(plan: InstallPlan) -> None:
    facts = plan.facts
    if plan.verified is not None:
        pub = plan.verified.publisher
        click.echo(f"signature ok: publisher {pub.name!r} ({pub.public_key}) signed")
        click.echo("  " + json.dumps(plan.verified.document, indent=2, sort_keys=True)
                   .replace("\n", "\n  "))
    else:
        click.echo(f"unsigned {facts.distribution} {facts.version}, approved with --approve: "
                   f"fingerprint {facts.fingerprint}")


def _undo(state: State, plan: InstallPlan, kept: Path | None, reason: str) -> Path | None:
    """Take the new wheel out again: install the `kept` previous version back (audited
    `plugin.rolled-back`; returns its wheel when its files are exactly back), else
    uninstall. The config is not edited: the previous version's entry, with its
    `publisher`, was never replaced, so no kept signature is needed here."""
    if kept is not None:
        with contextlib.suppress(InstallRefused, SigningError):
            pip_install(kept, force=True)
            back = read_wheel(kept)
            group = state.config().group
            if installed_fingerprint(plan.facts.distribution, group) == back.fingerprint:
                with contextlib.suppress(Exception):  # the restore stands if auditing fails
                    for name in plan.names:
                        state.auditor().record(
                            "plugin.rolled-back", "ok", subject=user(), plugin=name,
                            plugin_version=back.version, plugin_fingerprint=back.fingerprint,
                            reason=reason)
                tell_servers(state)
                return kept
    with contextlib.suppress(InstallRefused):
        pip_uninstall(plan.facts.distribution)
    return None


def _refuse(state: State, exc: InstallRefused, installed: bool,
            plan: InstallPlan | None = None, was: str | None = None,
            restored: Path | None = None) -> NoReturn:
    """Audit the refusal and exit 1."""
    facts = plan.facts if plan else None
    with contextlib.suppress(Exception):  # a refusal stands even if auditing fails
        state.auditor().record("plugin.installed", "refused", subject=user(),
                               plugin=exc.names[0] if exc.names else None,
                               plugin_version=facts.version if facts else None,
                               plugin_fingerprint=facts.fingerprint if facts else None,
                               reason=exc.reason)
    tail = "nothing was installed and the config is unchanged"
    if installed and restored is not None and facts is not None:
        tail = (f"the previously installed {facts.distribution} {was} was installed again "
                f"(kept in {restored}) and the config is unchanged")
    elif installed:
        tail = "the wheel was uninstalled again and the config is unchanged"
        if was is not None and facts is not None:
            tail += (f"; the previously installed {facts.distribution} {was} was replaced "
                     "and is gone: reinstall it")
    raise CheckFailed(f"refused ({exc.reason}): {exc}\n{tail}")


@click.command("uninstall")
@click.argument("name")
@pass_state
def uninstall(state: State, name: str) -> None:
    """Uninstall the plugin NAME (pip uninstall) and revoke its approval."""
    config = state.config()
    found = [p for p in discover(config.group) if p.name == name]
    entries = config.entries_for(name)
    if not found and not entries:
        unknown(name, [p.name for p in discover(config.group)])
    if len(found) > 1:
        raise CheckFailed(f"{name!r} is declared by several distributions "
                          f"({', '.join(p.distribution for p in found)}); uninstall them "
                          "with pip")
    distribution = found[0].distribution if found else entries[0].distribution
    if canonicalize_name(distribution) == CORE_DISTRIBUTION:
        raise CheckFailed(f"{name!r} belongs to dihya-core, which is not uninstalled here")
    names = {name} | {p.name for p in installed_plugins(distribution, config.group)}
    version = found[0].version if found else None
    if found:
        try:
            pip_uninstall(distribution)
        except InstallRefused as exc:
            raise CheckFailed(str(exc)) from exc
        click.echo(f"uninstalled {distribution} {version}")
    else:
        click.echo(f"{distribution} was not installed; revoking its approval", err=True)
    revoked = []
    with editing(state) as doc:
        for n in sorted(names):
            dist_ok = all(canonicalize_name(e.distribution) == canonicalize_name(distribution)
                          for e in config.entries_for(n))
            if dist_ok and remove_allow(doc, n):
                revoked.append(n)
    for n in revoked:
        click.echo(f"revoked {n}")
    auditor = state.auditor()
    for n in sorted(names):
        auditor.record("plugin.uninstalled", "ok", subject=user(), plugin=n,
                       plugin_version=version)


@click.command("rollback")
@click.argument("name")
@pass_state
def rollback(state: State, name: str) -> None:
    """Go back to the version of plugin NAME installed before the last `plugins install`.

    The kept wheel (in the user's cache) is installed again, its files checked against its
    fingerprint and its class loaded in a sandbox worker, then its approval is recorded
    (beside the current one, which stays approved: rolling forward is installing it
    again) and running servers reload. The version rolled back from is kept in turn.
    The entry names the publisher when the signature kept at that version's install
    verifies, with the publishers trusted now; else it is recorded as approved by you.
    """
    config = state.config()
    found = [p for p in discover(config.group) if p.name == name]
    if not found:
        unknown(name, [p.name for p in discover(config.group)])
    plugin = found[0]
    target = wheelcache.previous(plugin.distribution, plugin.version)
    if target is None:
        raise CheckFailed(f"no other version of {plugin.distribution} is kept in "
                          f"{wheelcache.cache_root()}: `dihya plugins install` keeps the "
                          "installed version there before it replaces it")
    with tempfile.TemporaryDirectory(prefix="dihya-rollback-") as tmp:
        # read, verify and install one private copy, so the file cannot change in between
        staged = Path(tmp) / target.name
        shutil.copyfile(target, staged)
        _roll_back(state, config, name, plugin, target, staged)


def _roll_back(state: State, config: Config, name: str, plugin: DiscoveredPlugin,
               target: Path, staged: Path) -> None:
    try:
        facts = read_wheel(staged)
    except SigningError as exc:
        raise CheckFailed(f"the kept wheel {target} cannot be read ({exc.reason}): "
                          f"{exc.message}") from exc
    names = tuple(sorted(facts.entry_points.get(config.group, {})))
    if name not in names:
        raise CheckFailed(f"the kept wheel {target} does not declare {name!r}")
    plan = InstallPlan(facts=facts, names=names, verified=None,
                       previous=tuple(e for n in names for e in config.entries_for(n)))
    now_fp = installed_fingerprint(plugin.distribution, config.group)
    forward = (wheelcache.keep_installed(plugin.distribution, now_fp)
               if now_fp is not None else None)
    publisher, how = _kept_publisher(facts, config.publishers)
    try:
        pip_install(staged, force=True)
    except InstallRefused as exc:
        raise CheckFailed(f"rollback of {name} refused ({exc.reason}): {exc}") from exc
    problem = installed_fingerprint_problem(plan, config.group)
    approvals = []
    if problem is None:
        for n in names:
            entries = config.entries_for(n)
            mode = entries[0].mode if entries else "sandbox"
            (installed,) = [p for p in installed_plugins(facts.distribution, config.group)
                            if p.name == n]
            try:
                safe = check_class(installed, facts.fingerprint, mode, config)
            except CheckFailed as exc:
                problem = exc.message
                break
            approvals.append(Approval(name=n, distribution=facts.distribution,
                                      version=facts.version, fingerprint=facts.fingerprint,
                                      publisher=publisher,
                                      safe=safe))
    if problem is not None:
        if forward is not None:
            with contextlib.suppress(InstallRefused):
                pip_install(forward, force=True)
        raise CheckFailed(f"rollback of {name} to {facts.version} refused: {problem}\n"
                          f"{plugin.distribution} {plugin.version} is installed again")
    with editing(state) as doc:
        entries_done = [record_next_version(doc, a) for a in approvals]
    auditor = state.auditor()
    for e in entries_done:
        auditor.record("plugin.rolled-back", "ok", subject=user(), plugin=e.name,
                       plugin_version=e.version, plugin_fingerprint=e.fingerprint,
                       reason="on-purpose")
    click.echo(f"rolled back {name}: {plugin.distribution} {plugin.version} -> "
               f"{facts.version} (from {target}) {facts.fingerprint}")
    click.echo(f"  {how}")
    if forward is not None:
        click.echo(f"kept {plugin.distribution} {plugin.version} as {forward}")


def _kept_publisher(facts: WheelFacts,
                    publishers: Sequence[Publisher]) -> tuple[str | None, str]:
    """The publisher a rollback to the kept wheel of `facts` records (None: approved by
    the operator) and what to say about it."""
    try:
        verified = wheelcache.verify_kept_signature(facts, publishers)
    except SigningError as exc:
        return None, f"no kept signature verifies: recorded as approved by you ({exc.message})"
    return verified.publisher.name, (
        f"signed by {verified.publisher.name}: the signature kept when {facts.version} was "
        "installed verifies for this content fingerprint")


COMMANDS = (keygen, sign, install, uninstall, rollback)
