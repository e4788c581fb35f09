"""`dihya plugins new NAME`: scaffold a plugin project (see `dihya.authoring.scaffold`).

Exit codes as everywhere: 0 ok, 2 usage (an invalid name, author or license, a non-empty
target directory).
"""

from __future__ import annotations

from pathlib import Path

import click

from dihya.authoring.scaffold import DEFAULT_LICENSE, LICENSES, ScaffoldError, new_project
from dihya.cli._common import Usage


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
def new_command(name: str, target: Path | None, author: str | None, license_id: str) -> None:
    """Write a new plugin project NAME: package, tests, tox.ini, README, CHANGELOG, LICENSE.

    NAME is the plugin's entry-point name (lower-case, dashes): the distribution is
    dihya-plugin-NAME. Then: cd into it and run `tox` (DIHYA_CORE=PATH to test against a
    core checkout or wheel).
    """
    where = target if target is not None else Path(f"dihya-plugin-{name}")
    try:
        files = new_project(name, where, author=author, license=license_id)
    except ScaffoldError as exc:
        raise Usage(str(exc)) from exc
    except OSError as exc:
        raise Usage(f"cannot write {where}: {exc}") from exc
    click.echo(f"wrote dihya-plugin-{name} ({len(files)} files) to {where}")
    for path in files:
        click.echo(f"  {path.relative_to(where)}")
    click.echo(f"next: cd {where} && tox   (DIHYA_CORE=/path/to/dihya-core tox to test "
               "against a core checkout or wheel)")
