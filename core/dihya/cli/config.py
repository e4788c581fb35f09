"""`dihya config init|check`: write a commented starting config; check one, every problem at
its file:line:col.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from dihya.cli._common import CheckFailed, State, Usage, echo_json, pass_state
from dihya.config.check import check, starting_config
from dihya.config.file import ConfigFileError, replace_atomically


@click.group("config")
def config_group() -> None:
    """Write a starting config, or check one."""


@config_group.command("init")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace an existing file (its approvals are lost).")
def init(path: Path, force: bool) -> None:
    """Write a commented config to PATH: valid as it is (it approves nothing), every other
    setting shown commented out with its default, and a random [audit] key. Mode 0600.

    Refuses to replace an existing file (exit 2) unless --force.
    """
    if os.path.lexists(path) and not force:
        raise Usage(f"{path} already exists: it is kept as it is. Check it with `dihya "
                    f"config check {path}`, or pass --force to replace it (its approvals "
                    "and comments are lost)")
    if path.is_dir():
        raise Usage(f"{path} is a directory: give the path of the file to write, e.g. "
                    f"{path / 'dihya.toml'}")
    try:
        replace_atomically(path, starting_config())
    except (OSError, ConfigFileError) as exc:
        raise CheckFailed(f"cannot write {path}: {getattr(exc, 'strerror', None) or exc}") \
            from exc
    click.echo(f"wrote {path} (mode 0600): approve plugins with `dihya --config {path} "
               "plugins approve NAME`, then run `dihya --config "
               f"{path} doctor`")


@config_group.command("check")
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of problems.")
@pass_state
def check_command(state: State, path: Path | None, as_json: bool) -> None:
    """Check a config file (PATH, else the one --config or $DIHYA_CONFIG names): malformed
    TOML, unknown tables and keys (with a did-you-mean), wrong types and values, each as
    file:line:col. Exit 1 on any problem."""
    target = path or state.config_path
    problems = check(target)
    if as_json:
        echo_json([p.to_json() for p in problems])
    else:
        for problem in problems:
            click.echo(str(problem))
    if problems:
        raise CheckFailed(f"{target}: {len(problems)} problem{'s' if len(problems) > 1 else ''}"
                          " (see above)")
    if not as_json:
        click.echo(f"{target}: ok")
