"""`dihya plugins list|show|fingerprint|reload|logs`: what is installed, what the core decided
about it, telling running servers to rebuild, and what a plugin logged (redacted).
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from dihya.gate.decide import (
    inspect_files,
)
from dihya.gate.fingerprint import FingerprintError, fingerprint_wheel
from dihya.gate.startup import pth_json
from dihya.pluginlog.collect import LEVELS
from dihya.registry import RegistrySnapshot

if TYPE_CHECKING:
    pass
from dihya.cli._common import (
    CheckFailed,
    LazyGroup,
    State,
    echo_json,
    find_plugin,
    pass_state,
    unknown,
    user,
)


@click.group(cls=LazyGroup)
def plugins() -> None:
    """Discover, approve, switch and verify generation plugins."""


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@pass_state
def list_plugins(state: State, as_json: bool) -> None:
    """List every installed plugin with its status."""
    snapshot = state.registry(start_workers=False)  # no sandbox worker started
    if as_json:
        # the array has no room for facts about the environment: every row carries them
        echo_json([_with_pth(r.to_json(), snapshot) for r in snapshot.records])
        return
    console = _console()
    console.print(plugin_table(snapshot, console.width))
    if not snapshot.records:
        click.echo("no plugin installed in group " + snapshot.config.group)
    for note in isolation_notes(snapshot):
        click.echo(note)
    _warn_pth(snapshot)


def isolation_notes(snapshot: RegistrySnapshot) -> list[str]:
    """The footnotes of the table's isolation marks: one line per plugin whose worker
    lacks a layer."""
    return [f"{ISOLATION_MARK} {r.name} runs with weaker isolation: {'; '.join(r.warnings)} "
            "(`dihya doctor` says how to fix it)" for r in snapshot.records if r.warnings]


ISOLATION_MARK = "(!)"
# below this width the distribution and hooks go (`plugins show NAME` or --json has them):
# seven columns on 80 would fold names in the middle
_WIDE = 120


def _console() -> Any:
    from rich.console import Console

    # a terminal's width, or $COLUMNS; else (a pipe, a file) wide enough for every column
    wide = sys.stdout.isatty() or bool(os.environ.get("COLUMNS"))
    return Console(width=None if wide else 160)


def plugin_table(snapshot: RegistrySnapshot, width: int) -> Any:
    """The `plugins list` table for a console `width` columns wide: a name is never
    folded; a plugin with weaker isolation gets a mark after its status, explained below
    the table."""
    from rich.markup import escape
    from rich.table import Table

    wide = width >= _WIDE
    table = Table(title=f"plugins ({snapshot.config.path})")
    columns = ("name", "status", "reason", "mode", "version",
               *(("distribution", "hooks") if wide else ()))
    longest = max((len(r.name) for r in snapshot.records), default=4)
    for column in columns:
        # names and statuses whole; a long reason, version or hook list folds instead
        whole = column in ("name", "status", "mode", "distribution")
        table.add_column(column, no_wrap=whole, overflow="fold",
                         min_width=longest if column == "name" else None)
    colors = {"active": "green", "disabled": "yellow", "refused": "red", "failed": "red"}
    for r in snapshot.records:
        mark = f" {escape(ISOLATION_MARK)}" if r.warnings else ""
        row = [escape(r.name), f"[{colors.get(r.status, 'white')}]{r.status}[/]{mark}",
               r.reason or "", r.mode or "", escape(r.version)]
        if wide:
            row += [escape(r.distribution), ", ".join(r.hooks)]
        table.add_row(*row)
    if not wide and snapshot.records:
        table.caption = "more: `plugins show NAME`, --json"
    return table


def _with_pth(data: dict[str, Any], snapshot: RegistrySnapshot) -> dict[str, Any]:
    data["pth"] = pth_json(snapshot.pth)
    for key in ("status", "reason"):  # a status or reason code as the plain string JSON
        if isinstance(data[key], str):  # writes of it (so the output is made in C)
            data[key] = str.__str__(data[key])
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
    snapshot = state.registry(start_workers=False)  # no sandbox worker started
    record = snapshot.get(name)
    if record is None:
        unknown(name, snapshot.names())
    data = record.to_json()
    if as_json:
        echo_json(_with_pth(data, snapshot))
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
    plugin = find_plugin(state, target)
    files, problem = inspect_files(plugin)
    if files is None:
        reason, message = problem or ("missing-file", "no files")
        raise CheckFailed(f"cannot fingerprint {target!r} ({reason}): {message}")
    click.echo(files.fingerprint)
    if problem is not None:
        raise CheckFailed(f"{target}: {problem[1]}: this install would be refused "
                          f"({problem[0]})")


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
    state.auditor().record("registry.reloaded", "ok", subject=user())
    click.echo(f"reload requested (state version {version}); running servers rebuild within "
               "a second")


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(value: str, now: float | None = None) -> float:
    """`--since`: a duration back from now (`30m`, `2h`, `7d`) or an ISO 8601 date or time
    (`2026-12-02`, `2026-12-02T09:30:00+00:00`; UTC when it names no zone), as seconds
    since the epoch."""
    import datetime as dt

    match = _DURATION.match(value.strip())
    if match:
        return (time.time() if now is None else now) - float(match.group(1)) * _UNIT_S[
            match.group(2)]
    try:
        when = dt.datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is neither a duration such as 30m, 2h or 7d nor "
                                 "an ISO 8601 date or time such as 2026-12-02T09:30") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


@plugins.command("logs")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.option("--since", help="Only records since then: 30m, 2h, 7d, or an ISO 8601 date or "
                              "time (UTC unless it says).")
@click.option("--level", type=click.Choice(LEVELS, case_sensitive=False),
              help="Only records at this level or above.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=1000,
              show_default=True, help="At most this many records, the newest.")
@pass_state
def logs(state: State, name: str, as_json: bool, since: str | None, level: str | None,
         limit: int) -> None:
    """Print what plugin NAME logged through `self.logger`, oldest first, with personal
    data replaced by placeholders ([needs], [email], [phone], [token]).

    The records of plugins no longer installed stay readable until retention or
    `dihya audit purge --plugin NAME` removes them.
    """
    from dihya.escaping import escape_text
    from dihya.store.pluginlogs import read

    since_at = parse_since(since) if since is not None else None
    store = state.store()
    records = [] if store is None else read(store, name, since=since_at, level=level,
                                            limit=limit)
    if as_json:
        echo_json([r.to_json() for r in records])
        return
    if store is None:
        click.echo("note: no state store yet: no plugin log record was kept", err=True)
    elif not records:
        click.echo(f"note: no log record of {name!r} matches (plugins log through "
                   "self.logger; records expire after [audit] plugin_log_retention_days)",
                   err=True)
    for r in records:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r.at))
        cut = f" (+{r.cut_bytes} bytes cut)" if r.cut_bytes else ""
        click.echo(escape_text(f"{when} {r.level:<8} {r.request_id or '-'} {r.message}{cut}"))
