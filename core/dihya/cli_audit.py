"""`dihya audit`: export, purge and verify the audit log (GDPR access and erasure).

Exit codes as everywhere: 0 ok, 1 the chain does not verify, 2 usage.
"""

from __future__ import annotations

import json

import click

from dihya.audit import FORMATS, Auditor
from dihya.cli import CheckFailed, State, Usage, _user

pass_state = click.make_pass_decorator(State)


def _auditor(state: State) -> Auditor:
    auditor = state.auditor()
    if auditor.log is None:  # pragma: no cover - State.auditor always has a store
        raise Usage("no state store is configured")
    return auditor


@click.group()
def audit() -> None:
    """Export, purge and verify the audit log."""


@audit.command("export")
@click.option("--subject", help="Only events about this subject (a token's name, a CLI user).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="json", show_default=True)
@pass_state
def export_cmd(state: State, subject: str | None, fmt: str) -> None:
    """Print every event (about SUBJECT) as JSON or CSV; the export is itself audited."""
    from dihya.gdpr import export

    click.echo(export(_auditor(state), subject, fmt, actor=_user()), nl=False)


@audit.command("purge")
@click.option("--subject", help="Erase this subject: pseudonym, notes, tokens.")
@click.option("--older-than", "days", type=click.FloatRange(min=0),
              help="Remove events older than DAYS days.")
@pass_state
def purge_cmd(state: State, subject: str | None, days: float | None) -> None:
    """Erase a subject or old events, then apply the retention period."""
    from dihya.gdpr import apply_retention, purge_older_than, purge_subject

    if (subject is None) == (days is None):
        raise Usage("give exactly one of --subject ID or --older-than DAYS")
    auditor = _auditor(state)
    if subject is not None:
        counts = purge_subject(auditor, subject, actor=_user())
        click.echo(f"erased the subject: {counts['events']} events unlinked, "
                   f"{counts['notes']} notes, {counts['tokens']} tokens and "
                   f"{counts['switches']} switch authors removed")
    else:
        assert days is not None
        click.echo(f"removed {purge_older_than(auditor, days, actor=_user())} events older "
                   f"than {days:g} days")
    retention = state.config().audit_retention_days
    removed = apply_retention(auditor, retention, interval_s=0)
    click.echo(f"retention ({retention:g} days): removed {removed or 0} events")


@audit.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@pass_state
def verify_cmd(state: State, as_json: bool) -> None:
    """Check the whole hash chain; exit 1 naming the first bad row."""
    log = _auditor(state).log
    assert log is not None
    result = log.verify()
    if as_json:
        click.echo(json.dumps({"ok": result.ok, "rows": result.rows,
                               "first_bad": result.first_bad, "problem": result.problem,
                               "head": result.head}))
    elif result.ok:
        click.echo(f"ok: {result.rows} rows verified; head {result.head}")
    if not result.ok:
        raise CheckFailed(f"the audit log does not verify: {result.problem}")
