"""`dihya doctor`: is this machine and this config fit to run plugins safely; each problem with
the command that fixes it (exit 1 on any problem; warnings do not fail).

A *problem* is something the operator can fix that weakens or breaks the backend (a missing
layer that an install provides, when run as root; a config others may write; a refused
approved plugin; an unacknowledged `.pth` file). A *warning* is a fact worth knowing that
does not fail: a layer the kernel or the container does not offer, a package only root can
install (for another user), a backend that is not root (workers keep its user), rate
limits counted per worker.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click

from dihya.cli._common import State, echo_json, pass_state, sqlite_file
from dihya.config import ENV_DISABLE, Config, ConfigError, load_config
from dihya.config.file import exposure
from dihya.gate.decide import FAILED, REFUSED
from dihya.gate.discovery import discover
from dihya.gate.startup import scan_pth
from dihya.reasons import Reason
from dihya.registry import RegistrySnapshot
from dihya.sandbox.inner import landlock_abi, seccomp_version
from dihya.sandbox.layers import AVAILABLE, probe, sandbox_user
from dihya.sandbox.policy import SAFE_PATH, SANDBOX_USERS

OK, WARNING, PROBLEM = "ok", "warning", "problem"
_MARK = {OK: "ok  ", WARNING: "warn", PROBLEM: "FAIL"}


def _row(name: str, level: str, detail: str, fix: str | None = None) -> dict[str, Any]:
    """One check: `ok` is False only for a problem (a warning does not fail)."""
    return {"name": name, "ok": level != PROBLEM, "level": level, "detail": detail,
            "fix": fix}


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON array of checks {name, ok, level, detail, fix}.")
@pass_state
def doctor(state: State, as_json: bool) -> None:
    """Check the sandbox layers, the sandbox user, the config and its permissions, the
    state store, .pth files, every approved plugin and the rate limits.

    Exit 1 if any check found a problem (each printed with the command that fixes it);
    warnings (a layer the kernel does not offer, a backend that is not root, limits
    counted per worker) do not fail.
    """
    rows = _sandbox_rows()
    config, config_rows = _config_rows(state)
    rows += config_rows
    if config is not None:
        rows += _store_rows(state, config)
        rows += _pth_rows(state, config)
        if not as_json and config.allow:
            click.echo(f"checking {len(config.allow)} approved plugin"
                       f"{'s' if len(config.allow) > 1 else ''} (each starts in a sandbox "
                       "worker: a few seconds)...", err=True)
        rows += _plugin_rows(state, config)
        rows += _web_rows(config)
    if as_json:
        echo_json(rows)
    else:
        for row in rows:
            click.echo(f"{_MARK[row['level']]} {row['name']}: {row['detail']}")
            if row["fix"] and row["level"] != OK:
                click.echo(f"     fix: {row['fix']}")
        problems = sum(1 for r in rows if r["level"] == PROBLEM)
        warnings = sum(1 for r in rows if r["level"] == WARNING)
        click.echo(f"{problems} problem{'' if problems == 1 else 's'}, {warnings} "
                   f"warning{'' if warnings == 1 else 's'} (warnings do not fail)")
    if any(r["level"] == PROBLEM for r in rows):
        sys.exit(1)


def _dihya(state: State) -> str:
    """How the fixes spell this command, with this config."""
    return f"dihya --config {shlex.quote(str(state.config_path))}"


def _installable() -> str:
    """The level of a missing system package: a problem for root, who can install it; a
    warning for another user, who has to ask (a developer's machine without sudo)."""
    return PROBLEM if os.geteuid() == 0 else WARNING


def _as_root(command: str) -> str:
    return command if os.geteuid() == 0 else f"sudo {command}"


# ------------------------------------------------------------------------ the sandbox

def _sandbox_rows() -> list[dict[str, Any]]:
    layers = probe()
    return [_user_row(layers), _namespaces_row(layers), _landlock_row(layers["landlock"]),
            _seccomp_row(layers["seccomp"])]


def _why(state: str) -> str:
    return state.removeprefix("unavailable: ")


def _user_row(layers: dict[str, str]) -> dict[str, Any]:
    python = os.path.realpath(sys.executable)
    if os.geteuid() != 0:
        import pwd

        me = pwd.getpwuid(os.geteuid()).pw_name if _has_name() else str(os.geteuid())
        return _row("sandbox-user", WARNING,
                    f"the backend is not root, so workers run as its own user ({me}): keep "
                    "that user for dihya alone (nothing else of value readable by it)",
                    "run the backend as a service user of its own (or as root, which starts "
                    f"workers as {' or '.join(SANDBOX_USERS)})")
    user = sandbox_user()
    if user is None:
        return _row("sandbox-user", PROBLEM, _why(layers["user"]),
                    "useradd --system --no-create-home --shell /usr/sbin/nologin "
                    "dihya-sandbox")
    if layers["user"] == AVAILABLE:
        return _row("sandbox-user", OK, f"workers run as {user.pw_name} (uid {user.pw_uid}), "
                    f"who can run the interpreter {python}")
    return _row("sandbox-user", PROBLEM, _why(layers["user"]),
                "apt-get install bubblewrap (its view lets the sandbox user reach the "
                f"interpreter), or install Python where {user.pw_name} can read it")


def _has_name() -> bool:
    import pwd

    try:
        pwd.getpwuid(os.geteuid())
    except KeyError:
        return False
    return True


def _namespaces_row(layers: dict[str, str]) -> dict[str, Any]:
    bwrap = shutil.which("bwrap", path=SAFE_PATH)
    if layers["bwrap"] == AVAILABLE and bwrap is not None:
        return _row("bubblewrap", OK, f"{_version(bwrap)} ({bwrap}): workers get their own "
                    "network, PID and mount namespaces and a filesystem view")
    if bwrap is None:
        fallback = ("unshare gives workers private namespaces meanwhile, but no filesystem "
                    "view" if layers["unshare"] == AVAILABLE else
                    f"workers have no namespaces (unshare: {_why(layers['unshare'])})")
        return _row("bubblewrap", _installable(), f"bubblewrap is not installed: {fallback}",
                    _as_root("apt-get install bubblewrap"))
    return _row("bubblewrap", WARNING,
                f"{_version(bwrap)} is installed but cannot start a worker here "
                f"({_why(layers['bwrap'])}); unshare: {layers['unshare']}",
                "common causes: user namespaces forbidden (sysctl "
                "kernel.unprivileged_userns_clone=1, or a container runtime that permits "
                "them), or an interpreter this user cannot run (see the error above)")


def _version(tool: str) -> str:
    try:
        out = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=10,
                             check=False)
    except (OSError, subprocess.SubprocessError):
        return os.path.basename(tool)
    return out.stdout.strip() or os.path.basename(tool)


def _landlock_row(state: str) -> dict[str, Any]:
    if state == AVAILABLE:
        return _row("landlock", OK, f"Landlock ABI {landlock_abi()}: workers cannot open "
                    "files outside their view and scratch directory")
    return _row("landlock", WARNING, f"{_why(state)}: workers rely on the other layers for "
                "files", "a Linux kernel 5.13 or later with Landlock in its lsm= list")


def _seccomp_row(state: str) -> dict[str, Any]:
    if state == AVAILABLE:
        return _row("seccomp", OK, f"{seccomp_version()}: workers cannot make network, "
                    "process or privilege system calls")
    if "libseccomp" in state and "cannot be loaded" in state:
        return _row("seccomp", _installable(), _why(state),
                    _as_root("apt-get install libseccomp2"))
    return _row("seccomp", WARNING, f"{_why(state)}: workers run without a system-call filter",
                "a kernel with seccomp filters (CONFIG_SECCOMP_FILTER)")


# ------------------------------------------------------------------------ the config

def _config_rows(state: State) -> tuple[Config | None, list[dict[str, Any]]]:
    path = state.config_path
    rows = []
    for problem in exposure(path, "config"):
        fix = _backquoted(problem)
        level = PROBLEM if "writable" in problem else WARNING
        rows.append(_row("config-permissions", level, problem.split(": run `")[0], fix))
    if os.path.exists(path) and not rows:
        rows.append(_row("config-permissions", OK, f"{path} is not open to other users"))
    try:
        config = load_config(path)
    except ConfigError as exc:
        return None, [_row("config", PROBLEM, exc.message,
                           f"dihya config check {shlex.quote(str(path))} (every problem with "
                           "its line), then edit the file"), *rows]
    if not config.exists:
        return None, [_row("config", PROBLEM, f"{path} does not exist: no plugin is approved",
                           f"dihya config init {shlex.quote(str(path))}"), *rows]
    if config.empty:
        return None, [_row("config", PROBLEM, f"{path} is empty (no table, no key): it "
                           "approves nothing and a running server does not take it",
                           f"dihya config init --force {shlex.quote(str(path))}"), *rows]
    approved = len(config.allow)
    return config, [_row("config", OK, f"{path} is valid ({approved} approval"
                         f"{'' if approved == 1 else 's'})"), *rows, _purge_floor_row(config)]


def _purge_floor_row(config: Config) -> dict[str, Any]:
    """`[audit] http_purge_min_age_days`: at 0 an admin token can erase, over HTTP, the
    audit events of what it just did (a warning: the operator may mean it)."""
    floor = config.http_purge_min_age_days
    if floor <= 0:
        return _row("audit-purge-floor", WARNING,
                    "[audit] http_purge_min_age_days = 0: an admin token can erase every "
                    "audit event over HTTP, the ones recording what it just did included",
                    f"set http_purge_min_age_days = 1 (or more) in [audit] of "
                    f"{config.path}; `dihya audit purge` on the server is not limited")
    return _row("audit-purge-floor", OK, f"HTTP purges keep the last {floor:g} day"
                f"{'' if floor == 1 else 's'} of audit events")


def _backquoted(text: str) -> str | None:
    match = re.search(r"run `([^`]+)`", text)
    return match.group(1) if match else None


# ------------------------------------------------------------------------ the store

def _store_rows(state: State, config: Config) -> list[dict[str, Any]]:
    from dihya.store import StoreError

    try:
        store = state.store(config)
    except click.ClickException as exc:
        return [_row("store", PROBLEM, exc.message, "see the message: restore the store, "
                     "or fix [store] url in the config")]
    if store is None:
        return [_row("store", WARNING, f"no state store yet at {config.effective_store_url} "
                     "(it is created by the first approval, `dihya serve` or `dihya tokens "
                     "create`)", f"{_dihya(state)} plugins reload")]
    file = sqlite_file(config)
    try:
        store.probe_write()
    except StoreError as exc:
        fix = (f"chmod u+rw {shlex.quote(str(file))} && chmod u+rwx "
               f"{shlex.quote(str(file.parent))}" if file is not None else
               "check that the database server is up and [store] url's user may write")
        return [_row("store", PROBLEM, f"the store {store.where} cannot be written: {exc}",
                     fix)]
    finally:
        store.dispose()
    where = str(file) if file is not None else store.where
    rows = [_row("store", OK, f"{where} is reachable and takes a write")]
    if file is not None:
        for problem in exposure(file, "store"):
            level = PROBLEM if "writable" in problem else WARNING
            rows.append(_row("store-permissions", level, problem.split(": run `")[0],
                             _backquoted(problem)))
    return rows


# ------------------------------------------------------------------------ .pth files

def _pth_rows(state: State, config: Config) -> list[dict[str, Any]]:
    found = scan_pth(config.known_pth)
    rows = [_row(f"pth:{p.file}", PROBLEM, p.describe(),
                 f"review {p.path}, then {_dihya(state)} plugins acknowledge-pth {p.file}")
            for p in found if not p.acknowledged]
    if not rows:
        many = len(found) != 1
        rows.append(_row("pth", OK, f"{len(found)} .pth file{'s' if many else ''} "
                         f"run{'' if many else 's'} code at interpreter start, all "
                         "acknowledged"))
    return rows


# ------------------------------------------------------------------------ plugins

def _plugin_rows(state: State, config: Config) -> list[dict[str, Any]]:
    dihya = _dihya(state)
    installed = {p.name for p in discover(config.group)}
    if not config.allow:
        return [_row("plugins", WARNING, f"no plugin is approved ({len(installed)} "
                     "installed)", f"{dihya} plugins approve NAME (after reviewing it)")]
    snapshot = state.registry()
    rows = []
    for name in dict.fromkeys(e.name for e in config.allow):
        # a name approved in several versions: the installed version's entry applies
        entries = config.entries_for(name)
        entry = next((e for e in entries if e.version == _installed_version(snapshot, name)),
                     entries[0])
        rows.append(_plugin_row(dihya, snapshot, name, entry.distribution, entry.version))
    unapproved = sorted(r.name for r in snapshot.records
                        if r.status == REFUSED and r.reason == Reason.NOT_ALLOWLISTED)
    if unapproved:
        rows.append(_row("plugins-unapproved", WARNING,
                         f"installed but not approved, so never run: {', '.join(unapproved)}",
                         f"{dihya} plugins approve NAME (after reviewing it), or "
                         f"{dihya} plugins uninstall NAME"))
    return rows


def _installed_version(snapshot: RegistrySnapshot, name: str) -> str | None:
    record = snapshot.get(name)
    return record.version if record is not None else None


def _plugin_row(dihya: str, snapshot: RegistrySnapshot, name: str, distribution: str,
                version: str) -> dict[str, Any]:
    record = snapshot.get(name)
    label = f"plugin:{name}"
    if record is None:
        return _row(label, PROBLEM, f"approved ({distribution} {version}) but not installed",
                    f"pip install '{distribution}=={version}', or {dihya} plugins revoke "
                    f"{name}")
    if record.status in (REFUSED, FAILED):
        return _row(label, PROBLEM, f"{record.status}/{record.reason}: {record.message}",
                    _plugin_fix(dihya, name, distribution, version, record.reason))
    if record.status != "active":
        why = record.reason or record.status
        env = f" (unset {ENV_DISABLE})" if why == "disabled-by-env" else ""
        return _row(label, OK, f"{record.status}/{why}: switched off on purpose{env}")
    where = (f"in a sandbox worker as {record.worker_user}" if record.mode == "sandbox"
             else "in the backend's process (in-process)")
    if record.warnings:
        return _row(label, WARNING, f"active, runs {where}, with weaker isolation: "
                    f"{'; '.join(record.warnings)}", "fix the sandbox checks above, then "
                    f"`{dihya} plugins show {name}` shows no warning")
    return _row(label, OK, f"active, verified ({record.version}), runs {where}")


def _plugin_fix(dihya: str, name: str, distribution: str, version: str,
                reason: str | None) -> str:
    reinstall = f"pip install --force-reinstall --no-deps '{distribution}=={version}'"
    if reason in (Reason.FINGERPRINT_MISMATCH, Reason.UNLISTED_FILE, Reason.MISSING_FILE,
                  Reason.SHADOWED_MODULE):
        return (f"{reinstall} (the approved files), or review the new files and "
                f"{dihya} plugins approve {name}")
    if reason in (Reason.VERSION_MISMATCH, Reason.DISTRIBUTION_MISMATCH):
        return (f"pip install '{distribution}=={version}', or review what is installed and "
                f"{dihya} plugins approve {name}")
    if reason in (Reason.IMPORT_ERROR, Reason.MISSING_DEPENDENCY):
        return f"pip install '{distribution}=={version}' (with its dependencies)"
    if reason == Reason.UNSAFE_IN_PROCESS:
        return f"{dihya} plugins approve {name} --mode sandbox"
    return f"{dihya} plugins show {name} (the message says what to change)"


# ------------------------------------------------------------------------ web

def _web_rows(config: Config) -> list[dict[str, Any]]:
    rows = []
    if config.rate_limit_storage.startswith("memory://"):
        rows.append(_row("rate-limits", WARNING,
                         f"no shared storage is configured, so rate limits are per worker: "
                         f"each `dihya serve` worker counts {config.rate_limit} on its own "
                         "(with --workers 4, a token can make up to 4 times as many calls)",
                         "set [web] rate_limit_storage = \"redis://HOST:6379\" for an exact "
                         "limit (one worker needs nothing)"))
    else:
        storage = re.sub(r"//[^@/]*@", "//***@", config.rate_limit_storage)
        rows.append(_row("rate-limits", OK, f"{config.rate_limit} per token, counted in "
                         f"{storage} (shared by every worker)"))
    if config.audit_key is None and not os.environ.get("DIHYA_AUDIT_KEY"):
        rows.append(_row("audit-key", WARNING,
                         "no [audit] key and no $DIHYA_AUDIT_KEY: every process draws its "
                         "own, so one person gets a different pseudonym in each worker and "
                         "after each restart",
                         f"set [audit] key in {Path(config.path)} (`dihya config init` writes "
                         "a random one)"))
    return rows
