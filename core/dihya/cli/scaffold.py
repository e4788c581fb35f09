"""`dihya plugins new NAME`: scaffold a plugin project (see `dihya.authoring.scaffold`);
`dihya plugins core-wheel`: a wheel of this core for a plugin's tests.

Exit codes as everywhere: 0 ok, 1 no core wheel could be made (`core-wheel`), 2 usage (an
invalid name, author or license, a non-empty target directory).
"""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from dihya.authoring.scaffold import DEFAULT_LICENSE, LICENSES, ScaffoldError, new_project
from dihya.cli._common import CheckFailed, Usage


@click.command("new")
@click.argument("name")
@click.option("--dir", "target", type=click.Path(file_okay=False, path_type=Path),
              help="Where to write the project (missing or empty). Default: "
                   "./dihya-plugin-NAME.")
@click.option("--author", help="Author or publisher, for pyproject.toml, the class and the "
              "LICENSE. Default: 'The dihya-plugin-NAME authors'.")
@click.option("--license", "license_id", type=click.Choice(LICENSES), default=DEFAULT_LICENSE,
              show_default=True, help="SPDX id of the project's license (its text is written "
                                      "to LICENSE).")
@click.option("--no-core-wheel", is_flag=True,
              help="Do not make a wheel of this core for the project's tests (they then take "
                   "dihya-core from $DIHYA_CORE or the package index).")
def new_command(name: str, target: Path | None, author: str | None, license_id: str,
                no_core_wheel: bool) -> None:
    """Write a new plugin project NAME: package, tests, tox.ini, README, CHANGELOG, LICENSE.

    NAME is the plugin's entry-point name (lower-case, dashes): the distribution is
    dihya-plugin-NAME. A wheel of this core is written to your cache directory
    ($XDG_CACHE_HOME/dihya/wheels, else ~/.cache/dihya/wheels) and named in the project's
    tox.ini, so its tests run where no index has dihya-core. The commands to run next are
    printed at the end.
    """
    from dihya.authoring.corewheel import CoreWheelError, core_wheel
    from dihya.authoring.places import git_work_tree
    from dihya.authoring.scaffold import check_project

    where = target if target is not None else Path(f"dihya-plugin-{name}")
    try:
        check_project(name, where, author=author, license=license_id)
    except ScaffoldError as exc:
        raise Usage(str(exc)) from exc
    core: Path | None = None
    if not no_core_wheel:
        try:
            core = core_wheel()
        except CoreWheelError as exc:
            click.echo(f"warning: no wheel of this core ({exc}): the project's tests take "
                       "dihya-core from $DIHYA_CORE or the package index", err=True)
    try:
        files = new_project(name, where, author=author, license=license_id, core=core)
    except ScaffoldError as exc:
        raise Usage(str(exc)) from exc
    except OSError as exc:
        raise Usage(f"cannot write {where}: {exc}") from exc
    click.echo(f"wrote dihya-plugin-{name} ({len(files)} files) to {where}")
    for path in files:
        click.echo(f"  {path.relative_to(where)}")
    tree = git_work_tree(where)
    if tree is not None:
        click.echo(f"warning: {where} is inside the git work tree {tree}; a plugin project "
                   "usually has a repository of its own (--dir elsewhere)", err=True)
    if core is not None:
        click.echo(f"tests run against this core's wheel: {core}")
    click.echo("next:")
    for line in next_commands(where, core):
        click.echo(f"  {line}")


def next_commands(where: Path, core: Path | None) -> list[str]:
    """The shell commands that test the new project on a fresh machine, in order (they
    need `python3` 3.11+ and a package index for the core's own dependencies)."""
    install = ".venv/bin/pip install -q"
    if core is not None:
        install += f" {shlex.quote(str(core))}"
    return [f"cd {shlex.quote(str(where))}",
            "python3 -m venv .venv",
            f"{install} -e '.[test]'",
            ".venv/bin/pytest -q",
            ".venv/bin/pip install -q 'tox>=4.11' && .venv/bin/tox"]


@click.command("core-wheel")
@click.option("--dir", "outdir", type=click.Path(file_okay=False, path_type=Path),
              help="Where to write it. Default: $XDG_CACHE_HOME/dihya/wheels, else "
                   "~/.cache/dihya/wheels.")
def core_wheel_command(outdir: Path | None) -> None:
    """Write a wheel of this dihya-core and print its path alone on stdout.

    For a plugin's tests where no index has dihya-core:
    `DIHYA_CORE=$(dihya plugins core-wheel) tox`.
    """
    from dihya.authoring.corewheel import CoreWheelError, core_wheel

    try:
        click.echo(core_wheel(outdir))
    except CoreWheelError as exc:
        raise CheckFailed(f"{exc}; set DIHYA_CORE to a dihya-core checkout or wheel") from exc
