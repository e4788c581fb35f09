"""`dihya audit`: export, purge and verify the audit log (GDPR access and erasure); tail it.

None of them creates a store: where there is none (and the store marker expects none),
export prints nothing, purge erases nothing and verify says there is nothing to verify. A
store missing where the marker says one was is exit 1 (`State.store`).

Exit codes as everywhere: 0 ok, 1 the chain does not verify (or the store is missing,
replaced or emptied), 2 usage.
"""

from __future__ import annotations

import json
import time
from typing import Any, Final

import click

from dihya.audit import FORMATS, Auditor
from dihya.cli._common import CheckFailed, State, Usage, user

pass_state = click.make_pass_decorator(State)
#: How often `audit tail --follow` asks the store for new events.
FOLLOW_POLL_S: Final = 0.5


def _auditor(state: State) -> Auditor | None:
    """The store's audit door; None (with a note) when there is no store yet."""
    auditor = state.existing_auditor()
    if auditor is None:
        click.echo(f"note: no state store yet ({state.config().effective_store_url}): no "
                   "audit event was written", err=True)
    return auditor


@click.group()
def audit() -> None:
    """Export, purge and verify the audit log."""


@audit.command("export")
@click.option("--subject", help="Only events about this subject (a token's name, a CLI user).")
@click.option("--plugin", help="The audit events that name this plugin and its own log "
                               "records (JSON or JSON Lines).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="json", show_default=True)
@pass_state
def export_cmd(state: State, subject: str | None, plugin: str | None, fmt: str) -> None:
    """Print every event (about SUBJECT) as JSON or CSV, or a plugin's events and log
    records; the export is itself audited."""
    from dihya.audit.gdpr import PLUGIN_FORMATS, export, plugin_export, render

    if subject is not None and plugin is not None:
        raise Usage("give --subject ID or --plugin NAME, not both")
    if plugin is not None and fmt not in PLUGIN_FORMATS:
        raise Usage(f"--plugin exports events and log records, two kinds of row: use "
                    f"--format {' or --format '.join(PLUGIN_FORMATS)}, not {fmt}")
    auditor = _auditor(state)
    if auditor is None:
        if plugin is not None:
            empty = {"plugin": plugin, "events": [], "logs": []}
            click.echo(json.dumps(empty) if fmt == "json" else "")
        else:
            click.echo(render([], fmt), nl=False)
        return
    if plugin is not None:
        click.echo(plugin_export(auditor, plugin, fmt, actor=user()), nl=False)
        return
    click.echo(export(auditor, subject, fmt, actor=user()), nl=False)


@audit.command("tail")
@click.option("-n", "--lines", "count", type=click.IntRange(1, 10000), default=20,
              show_default=True, help="How many of the latest events to show first.")
@click.option("--follow", "-f", is_flag=True,
              help=f"Then show new events as they are committed (the store is polled every "
                   f"{FOLLOW_POLL_S:g} s, by every node sharing it); stop with Ctrl-C.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per line (JSON Lines), with `at_iso` beside `at`.")
@pass_state
def tail_cmd(state: State, count: int, follow: bool, as_json: bool) -> None:
    """Show the latest events with their times in ISO 8601 (UTC), oldest first."""
    from dihya.audit.gdpr import with_iso

    auditor = _auditor(state)
    log = auditor.log if auditor is not None else None
    if log is None:
        if not follow:
            return
        while (auditor := state.existing_auditor()) is None or auditor.log is None:
            time.sleep(FOLLOW_POLL_S)  # a store that appears later is followed
        log = auditor.log
    after: int | None = None
    rows = log.tail(None, count)
    try:
        while True:
            for row in rows:
                _print_event(with_iso(row), as_json)
                after = row["seq"]
            if not follow:
                return
            rows = []
            while not rows:
                time.sleep(FOLLOW_POLL_S)
                rows = log.tail(after if after is not None else -1, 1000)
    except KeyboardInterrupt:
        return


def _print_event(row: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(row, sort_keys=True, ensure_ascii=False))
        return
    row.pop("note", None)  # personal free text: in exports, never in a live view
    skip = {"seq", "at", "at_iso", "type", "outcome", "event_id"}
    rest = " ".join(f"{k}={row[k]}" for k in sorted(row) if k not in skip)
    click.echo(f"{row['at_iso']}  {row['seq']:>6}  {row['type']:<22} {row['outcome']:<8} "
               f"{rest}".rstrip())


@audit.command("purge")
@click.option("--subject", help="Erase this subject: pseudonym, notes, tokens.")
@click.option("--older-than", "days", type=click.FloatRange(min=0),
              help="Remove events older than DAYS days.")
@click.option("--plugin", help="Erase what is kept about this plugin: its log records and "
                               "the notes of its audit events (the events stay in the chain).")
@pass_state
def purge_cmd(state: State, subject: str | None, days: float | None,
              plugin: str | None) -> None:
    """Erase a subject, old events or a plugin's records, then apply the retention
    period."""
    from dihya.audit.gdpr import apply_retention, purge_older_than, purge_plugin, purge_subject

    if sum(x is not None for x in (subject, days, plugin)) != 1:
        raise Usage("give exactly one of --subject ID, --older-than DAYS or --plugin NAME")
    auditor = _auditor(state)
    if auditor is None:
        click.echo("nothing to erase: there is no state store")
        return
    if subject is not None:
        counts = purge_subject(auditor, subject, actor=user())
        click.echo(f"erased the subject: {counts['events']} events unlinked, "
                   f"{counts['notes']} notes, {counts['tokens']} tokens and "
                   f"{counts['switches']} switch authors removed")
    elif plugin is not None:
        counts = purge_plugin(auditor, plugin, actor=user())
        logs, notes, events = counts["logs"], counts["notes"], counts["events"]
        click.echo(f"erased plugin {plugin}: {logs} log record{'s' if logs != 1 else ''} and "
                   f"{notes} note{'s' if notes != 1 else ''} removed; its {events} audit "
                   + ("event stays" if events == 1 else "events stay") + " in the chain")
    else:
        assert days is not None
        click.echo(f"removed {purge_older_than(auditor, days, actor=user())} events older "
                   f"than {days:g} days")
    config = state.config()
    retention = config.audit_retention_days
    removed = apply_retention(auditor, retention, interval_s=0,
                              plugin_log_days=config.plugin_log_retention_days)
    click.echo(f"retention ({retention:g} days): removed {removed or 0} events")


@audit.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@pass_state
def verify_cmd(state: State, as_json: bool) -> None:
    """Check the whole hash chain; exit 1 naming the first bad row.

    Also exit 1 when the store marker says events were written but the store has none,
    when the chain no longer reaches the head a previous verify saw (rows removed from the
    end), and when the store is missing or not the one the marker recorded.
    """
    auditor = _auditor(state)
    if auditor is None:
        _print_verify(as_json, {"ok": True, "rows": 0, "first_bad": None, "problem": None,
                                "head": None}, "ok: no state store yet: nothing to verify")
        return
    log = auditor.log
    assert log is not None
    result = log.verify()
    marker = state.marker()
    store_id = log.store.store_id()
    problem = result.problem
    if result.ok:
        problem = _marker_problem(marker.read(), result.head, log.hash_at, marker.describe)
    ok = result.ok and problem is None
    _print_verify(as_json, {"ok": ok, "rows": result.rows, "first_bad": result.first_bad,
                            "problem": problem, "head": result.head},
                  f"ok: {result.rows} rows verified; head {result.head}")
    if not ok:
        raise CheckFailed(f"the audit log does not verify: {problem}")
    try:
        marker.note_verified(store_id, result.head if result.rows or marker.expected
                             else None)
    except OSError as exc:
        click.echo(f"warning: cannot record the verified head in {marker.path} "
                   f"({exc.strerror})", err=True)


def _print_verify(as_json: bool, data: dict[str, Any], ok_line: str) -> None:
    if as_json:
        click.echo(json.dumps(data))
    elif data["ok"]:
        click.echo(ok_line)


def _marker_problem(record: dict[str, Any] | None, head: str | None,
                    hash_at: Any, describe: Any) -> str | None:
    """What the store marker knows that the chain contradicts: events written but none
    left, or a head verified before that the chain no longer reaches."""
    if record is None or head is None:
        return None
    seq = int(head.partition(":")[0])
    if record.get("events") and seq == 0:
        return (f"the store holds no audit event, but {describe()}: its events were deleted "
                "or the store was emptied")
    verified = record.get("verified_head")
    if isinstance(verified, str) and ":" in verified:
        old_seq_text, _, old_hash = verified.partition(":")
        old_seq = int(old_seq_text)
        if old_seq > seq:
            return (f"the chain ends at row {seq}, but a previous verify saw it reach row "
                    f"{old_seq} ({verified}): rows were removed from its end")
        found = hash_at(old_seq)
        if found is not None and found != old_hash:
            return (f"row {old_seq} is not the row a previous verify saw ({verified}): the "
                    "chain was rewritten from there on")
    return None
