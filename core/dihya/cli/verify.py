"""`dihya plugins verify`: is every approved plugin running, is the config usable, which `.pth`
files run code; exit 1 on any problem (for cron and CI).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from dihya.config import (
    EMPTY,
    MISSING,
    UNREADABLE,
    Config,
    ConfigError,
    load_config,
)
from dihya.config.file import exposure
from dihya.gate.decide import (
    FAILED,
    REFUSED,
)
from dihya.gate.discovery import discover
from dihya.gate.startup import PthFile, scan_pth

if TYPE_CHECKING:
    pass
from dihya.cli._common import (
    CheckFailed,
    State,
    Usage,
    echo_json,
    pass_state,
    sqlite_file,
)


@click.command("verify")
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
        from dihya.web.ratelimit import PER_WORKER_NOTE, limits_are_shared

        if config.exists and not limits_are_shared(config):
            rows.append(_check_row("rate-limits", "note", "per-worker-limits",
                                   PER_WORKER_NOTE, True))
    if as_json:
        echo_json(rows)
    else:
        for row in rows:
            if row is failed and row["check"] != "plugin":
                continue  # said once, on stderr, by the error below
            mark = {"warning": "warn", "note": "note"}.get(
                row["status"], "ok  " if row["ok"] else "FAIL")
            if row["check"] != "plugin":
                click.echo(f"{mark} {row['check']}: {row['message']}")
                continue
            click.echo(f"{mark} {row['name']}: {_plugin_line(row)}")
    if failed is not None and failed["check"] != "plugin":
        raise CheckFailed(failed["message"])
    if not all(row["ok"] for row in rows):
        sys.exit(1)


def _plugin_line(row: dict[str, Any]) -> str:
    """What a plugin row says, once: "active, verified (sandbox worker as nobody)",
    "disabled/disabled-by-config: <why>", "refused/fingerprint-mismatch: <why>"."""
    if row["status"] == "active" and row["message"] in ("", "active"):
        who = row.get("worker_user")
        return f"active, verified{f' (sandbox worker as {who})' if who else ''}"
    reason = f"/{row['reason']}" if row["reason"] else ""
    return f"{row['status']}{reason}: {row['message']}"


def _check_row(check: str, status: str, reason: str | None, message: str,
               ok: bool, name: str | None = None) -> dict[str, Any]:
    """One row of `plugins verify`: `check` is "plugin" (a row per allowlisted plugin),
    "config", "allowlist", "store", "pth" or "rate-limits" (a note, status "note": limits
    counted per worker)."""
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
            for what, file in (("config", path), ("store", sqlite_file(config)))
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
