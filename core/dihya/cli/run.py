"""`dihya generate` (one generation into OUTDIR, with the approved plugins) and `dihya serve`
(the HTTP backend under gunicorn).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import click

if TYPE_CHECKING:
    from dihya.output import OutputError
from dihya.cli._common import (
    CheckFailed,
    State,
    Usage,
    echo_json,
    one_line,
    pass_state,
)


@click.command()
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
    from dihya.pluginlog import LogLimits, collecting

    needs = _read_json(needs_file)
    snapshot = state.registry()
    config = state.config()
    emit: Callable[[dict[str, Any]], None] = echo_json if as_json else _echo_report
    try:
        with (contextlib.redirect_stdout(sys.stderr),
              collecting(None, needs, LogLimits(config.plugin_log_records,
                                                config.plugin_log_bytes)) as plugin_logs):
            try:
                result = run_generation(needs, snapshot)
            finally:
                _keep_plugin_logs(state, plugin_logs.finish())
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
        if not exc.usage:  # writing failed (a full disk, a file in the way): the report too
            emit({"error": "write-failed", "message": str(exc),
                  "plugins": [h.to_json() for h in result.plugins]})
        raise _output_failed(exc) from exc
    except (OSError, UnicodeError) as exc:
        # the disk, permissions, a name the filesystem refuses: one line, never a traceback
        # (write_tree wrote nothing: its temporary directory is removed)
        emit({"error": "write-failed", "message": one_line(exc),
              "plugins": [h.to_json() for h in result.plugins]})
        raise CheckFailed(f"cannot write {outdir}: {one_line(exc)}") from exc
    _notes(written.recovered)
    emit({"outdir": str(outdir), "files": written.files, "kept": written.kept,
          "plugins": [h.to_json() for h in result.plugins],
          "needs_sha256": result.needs_sha256, "ms": round(result.ms, 1)})


def _keep_plugin_logs(state: State, records: list[Any]) -> None:
    """The plugins' log records (redacted): into the state store if there is one
    (`dihya plugins logs NAME` reads them), else on stderr."""
    from dihya.escaping import escape_text

    if not records:
        return
    store = state.store()
    if store is not None:
        from dihya.store.pluginlogs import write

        write(store, records)
        return
    for record in records:
        click.echo(escape_text(f"plugin {record.plugin} {record.level}: {record.message}"),
                   err=True)


def _notes(lines: list[str]) -> None:
    for line in lines:
        click.echo(f"note: {line}", err=True)


def _output_failed(exc: OutputError) -> click.ClickException:
    """Exit 2 for a refusal (what was asked), 1 for a failed write; OUTDIR is as it was."""
    _notes(exc.recovered)
    return (Usage if exc.usage else CheckFailed)(str(exc))


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
    except ValueError as exc:  # NaN or Infinity: not JSON
        raise CheckFailed(f"{path}: not valid JSON: {exc}") from exc


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


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64),
              help="gunicorn worker processes.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Requests each worker answers at once (more than 1: gunicorn's gthread "
                   "worker); concurrent requests of a worker share their audit commits.")
@click.option("--log-format", type=click.Choice(("json", "text")), default="json",
              show_default=True,
              help="Every line on stderr (gunicorn's included): JSON objects with time, "
                   "level, event, request_id and message, or the same as text for people.")
@pass_state
def serve(state: State, host: str, port: int, workers: int, threads: int,
          log_format: str) -> None:
    """Serve the HTTP API under gunicorn until interrupted.

    Creates the state store if there is none (and the store marker does not say one was
    there: then exit 1); the workers themselves never create it.
    """
    import logging

    from dihya.web.serve import configure_logging
    from dihya.web.serve import serve as run_server

    configure_logging(log_format)
    state.warned = True  # a missing or empty config is said below, in the log's format
    config = state.config()  # fail fast, with exit 2, on a malformed config
    if not config.exists or config.empty:
        what = "does not exist" if not config.exists else "is empty"
        logging.getLogger("dihya.web").warning(
            f"config file {what}: no plugin is approved (pass --config or set DIHYA_CONFIG)",
            extra={"reason": "missing-config" if not config.exists else "empty-config",
                   "event": "config.warning"})
    state.store(create=True)
    run_server(str(state.config_path), host, port, workers, threads=threads,
               log_format=log_format)
