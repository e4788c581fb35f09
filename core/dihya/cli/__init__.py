"""The `dihya` command: a thin face over the core functions.

Exit codes: 0 ok, 1 a check failed (unknown plugin, refused approval, invalid needs,
failed verification), 2 usage (bad arguments, malformed config, non-empty OUTDIR).

Command groups live one per module (`plugins`, `approve`, `verify`, `run`, `tokens`,
`audit`, `publish`, `scaffold`, `config`, `doctor`) and are assembled here, as Flask
assembles its CLI; the helpers they share are in `_common`. Every command, sub-command
included, takes `--config PATH` (before or after its name).
"""

from __future__ import annotations

import logging
import signal
import sys
from typing import Any, NoReturn

import click

from dihya import __version__
from dihya.cli._common import CheckFailed, LazyGroup, State, Usage
from dihya.cli.plugins import plugins
from dihya.config import resolve_path

# The command groups' modules, imported when one of their commands is looked up (a run, a
# --help that lists it), not at every start: `plugins list` needs none of them. Each name
# is the command's, as `dihya --help` and `dihya plugins --help` list it.
_MAIN_COMMANDS = {
    "generate": "dihya.cli.run:generate",
    "serve": "dihya.cli.run:serve",
    "tokens": "dihya.cli.tokens:tokens",
    "audit": "dihya.cli.audit:audit",
    "config": "dihya.cli.config:config_group",
    "doctor": "dihya.cli.doctor:doctor",
}
_PLUGINS_COMMANDS = {
    "approve": "dihya.cli.approve:approve",
    "revoke": "dihya.cli.approve:revoke",
    "enable": "dihya.cli.approve:enable",
    "disable": "dihya.cli.approve:disable",
    "verify": "dihya.cli.verify:verify",
    "acknowledge-pth": "dihya.cli.approve:acknowledge_pth",
    "new": "dihya.cli.scaffold:new_command",
    "core-wheel": "dihya.cli.scaffold:core_wheel_command",
    "keygen": "dihya.cli.publish:keygen",
    "sign": "dihya.cli.publish:sign",
    "install": "dihya.cli.publish:install",
    "uninstall": "dihya.cli.publish:uninstall",
    "rollback": "dihya.cli.publish:rollback",
}


class _Group(LazyGroup):
    """The `dihya` group: a store that fails under a command (read-only, full, deleted,
    unreachable) ends it with exit 1 and the cause in words, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            # only a command that opened the store can meet a store fault; the others never
            # import `dihya.store` (and SQLAlchemy with it, a third of a command's start)
            faults = sys.modules.get("dihya.store.faults")
            if faults is not None and isinstance(exc, faults.StoreUnavailable):
                raise CheckFailed(str(exc)) from exc
            raise


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="Backend config (TOML). Default: $DIHYA_CONFIG, else ./dihya.toml.")
@click.option("-v", "--verbose", is_flag=True, help="Log what the core does to stderr.")
@click.version_option(__version__, prog_name="dihya")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, verbose: bool) -> None:
    """Dihya Coding: generate code, with plugins only an operator approved."""
    from dihya.audit.logs import configure

    configure(sys.stderr, logging.INFO if verbose else logging.WARNING)
    # SIGTERM ends a command the way Ctrl-C does: exit handlers run, so its sandbox
    # workers stop and their scratch directories are removed
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    ctx.obj = State(resolve_path(config_path), config_given=config_path is not None)


def _exit_on_sigterm(signum: int, _frame: object) -> NoReturn:
    raise SystemExit(128 + signum)


def _late_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    """`--config PATH` after a sub-command: the same as before it."""
    if value is None:
        return
    state = ctx.find_object(State)
    if state is None:  # pragma: no cover - a sub-command is always under `main`
        return
    path = resolve_path(value)
    if state.config_given and state.config_path != path:
        raise Usage(f"--config is given twice, as {state.config_path} and as {path}: give "
                    "it once (before or after the sub-command)")
    state.config_path, state.config_given = path, True


def _accept_config_anywhere(command: click.Command) -> None:
    """Give `command` and every sub-command under it the `--config` option of `dihya`."""
    if not any("--config" in p.opts for p in command.params):
        command.params.append(click.Option(
            ["--config", "late_config"], type=click.Path(dir_okay=False), expose_value=False,
            is_eager=True, callback=_late_config,
            help="Backend config (TOML), as `dihya --config PATH`."))
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _accept_config_anywhere(sub)


main.add_command(plugins)
main.lazy = dict(_MAIN_COMMANDS)
assert isinstance(plugins, LazyGroup)
plugins.lazy = dict(_PLUGINS_COMMANDS)
main.prepare = plugins.prepare = _accept_config_anywhere  # a command loaded later gets it too
for _command in main.commands.values():
    _accept_config_anywhere(_command)

if __name__ == "__main__":  # pragma: no cover
    main()
