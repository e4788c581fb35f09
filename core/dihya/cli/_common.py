"""Shared by the `dihya` command's modules: the state of one invocation (config, store, registry,
auditor), the exit-code exceptions, and the option and output helpers.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import attrs
import click

from dihya.audit import Auditor
from dihya.config import (
    MODES,
    ROLES,
    Config,
    ConfigError,
    load_config,
)
from dihya.config.file import ConfigFileError, ConfigLockTimeout
from dihya.gate.decide import PluginNotFound, find_installed
from dihya.gate.discovery import DiscoveredPlugin
from dihya.reasons import Reason
from dihya.registry import RegistrySnapshot, build_registry

if TYPE_CHECKING:
    from dihya.store import Store
    from dihya.store.marker import StoreMarker


class LazyGroup(click.Group):
    """A group whose commands in `lazy` (name -> "module:attribute") are imported when one
    is looked up (run, or listed by --help), not when the `dihya` command starts; each is
    handed to `prepare` first (the `--config` option of every command)."""

    lazy: dict[str, str]
    prepare: Callable[[click.Command], None] | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = {}
        self.prepare = None

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            import importlib

            module, _, attribute = self.lazy[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attribute)
            assert isinstance(command, click.Command) and command.name == cmd_name, cmd_name
            if self.prepare is not None:
                self.prepare(command)
            self.add_command(command, cmd_name)
        return self.commands.get(cmd_name)


class CheckFailed(click.ClickException):
    """A check failed: exit 1."""

    exit_code = 1


class Usage(click.ClickException):
    """Bad usage or config: exit 2."""

    exit_code = 2


@attrs.define
class State:
    config_path: Path
    # whether --config was given (before the sub-command or after it): given twice, the
    # two must agree
    config_given: bool = False
    warned: bool = False
    _auditor: Auditor | None = None

    def config(self) -> Config:
        try:
            config = load_config(self.config_path)
        except ConfigError as exc:
            raise Usage(str(exc)) from exc
        if not self.warned and (not config.exists or config.empty):
            self.warned = True
            what = "does not exist" if not config.exists else "is empty (no table, no key)"
            click.echo(f"warning: config file {self.config_path} {what}: no plugin is "
                       "approved (pass --config or set DIHYA_CONFIG)", err=True)
        return config

    def registry(self, start_workers: bool = True) -> RegistrySnapshot:
        """The plugins as this command sees them. `start_workers=False` (listings): a
        sandbox-mode plugin is described from what its worker said when it was checked
        (`dihya.store.facts`), without starting it, when that is recorded; a worker left
        unstarted starts at the plugin's first hook call."""
        config = self.config()
        store: Store | None = None
        read = self.switches_read_only(config)
        if read is None:
            store = self.store(config)
            read = {} if store is None else {
                n: (s.reason_code, s.reason) for n, s in store.plugin_switches().items()}
        switches = {n: (code, f"{code}: {reason or ''}".rstrip(": "))
                    for n, (code, reason) in read.items()}
        # Plugins' import-time prints must not corrupt what this command prints.
        with contextlib.redirect_stdout(sys.stderr):
            snapshot = build_registry(config, switches=switches, facts=store,
                                      start_workers=start_workers)
        atexit.register(snapshot.close)  # stop this command's sandbox workers
        return snapshot

    def switches_read_only(self, config: Config) -> dict[str, tuple[str, str | None]] | None:
        """The kill switches (name -> reason code, reason) read without opening the store
        (`dihya.store.quickread`: `sqlite3`, read-only, no SQLAlchemy), when that is all a
        build takes from the store: no approval is in sandbox mode (a sandboxed plugin's
        listing reads and writes what its worker said, `dihya.store.facts`), the store is
        an existing SQLite file of this schema version, and it is the one the store marker
        records. None otherwise: `store()` then opens it, creating nothing, upgrading or
        saying what is wrong, as before."""
        if any(entry.mode != "in-process" for entry in config.allow):
            return None
        from dihya.store.quickread import plain_sqlite_path, read_listing_state

        path = plain_sqlite_path(config.effective_store_url)
        if path is None or not path.is_file():
            return None
        read = read_listing_state(path)
        if read is None or self.marker(config).mismatch(read.store_id) is not None:
            return None
        return read.switches

    def store(self, config: Config | None = None, create: bool = False) -> Store | None:
        """The state store; None where there is none yet and `create` is not asked.

        Created only with `create`, and only beside a config that exists. A store missing
        where the store marker says one was, or a different store in its place, is an
        error (exit 1) saying what to do — never a new, empty store.
        """
        config = config or self.config()
        url = config.effective_store_url
        marker = self.marker(config)
        file = sqlite_file(config)
        if file is not None and not file.exists():
            if marker.expected:
                raise CheckFailed(missing_store(file, marker))
            if not create:
                return None
            if not config.exists:
                raise CheckFailed(f"no config file at {self.config_path}, so no state store "
                                  "is created: the store lives beside the config (or at its "
                                  "[store] url). Pass --config or set DIHYA_CONFIG, or write "
                                  "the config first (`dihya plugins approve NAME` writes "
                                  "one)")
        from dihya.store import Store, StoreError, StoreMissing, StoreUnavailable

        try:
            store = Store(url, create=create and not marker.expected,
                          synchronous=config.store_synchronous)
            store.ensure_schema()
            problem = marker.mismatch(store.store_id()) if marker.expected else None
        except StoreMissing as exc:
            if marker.expected:
                raise CheckFailed(f"{exc}; but {marker.describe()}: restore the store from "
                                  "a backup, or, to start an empty one on purpose, delete "
                                  f"{marker.path}") from exc
            return None
        except StoreUnavailable as exc:
            raise CheckFailed(str(exc)) from exc
        except StoreError as exc:
            raise Usage(str(exc)) from exc
        if problem is not None:
            raise CheckFailed(problem)
        if store.created_now:
            try:
                marker.note_created(store.store_id())
            except OSError as exc:
                click.echo(f"warning: cannot write the store marker {marker.path} "
                           f"({exc.strerror}): a deleted store will not be noticed", err=True)
        return store

    def marker(self, config: Config | None = None) -> StoreMarker:
        # imported here: the `dihya.store` package brings SQLAlchemy (a third of a
        # command's start), which commands that never open the store do not need
        from dihya.store.marker import StoreMarker

        config = config or self.config()
        return StoreMarker.for_config(self.config_path, config.effective_store_url)

    def auditor(self) -> Auditor:
        """The audit door, writing to the store (created if needed)."""
        if self._auditor is None:
            config = self.config()
            self._auditor = Auditor(config.audit_key, store=self.store(config, create=True),
                                    marker=self.marker(config))
        return self._auditor

    def existing_auditor(self) -> Auditor | None:
        """The audit door of the store if it exists; None (and nothing created) if not."""
        if self._auditor is None:
            config = self.config()
            store = self.store(config)
            if store is None:
                return None
            self._auditor = Auditor(config.audit_key, store=store, marker=self.marker(config))
        return self._auditor


def missing_store(file: Path, marker: StoreMarker) -> str:
    return (f"the state store {file} is missing, but {marker.describe()}: it was deleted or "
            "moved. Restore it from a backup (with its -wal file, if there is one) or put it "
            "back, then retry; to start an empty store on purpose (every token, runtime "
            f"switch and audit event of the old one is lost), delete {marker.path}")


def user() -> str:
    import getpass  # only commands that record who did it

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid-{os.getuid()}"


pass_state = click.make_pass_decorator(State)


def echo_json(data: Any) -> None:
    """`json.dumps(data, indent=2, ensure_ascii=False)`, printed (the same text, made in
    C where it can be: `dihya.canonical.indented_json`)."""
    from dihya.canonical import indented_json

    click.echo(indented_json(data))


def unknown(name: str, known: Sequence[str]) -> NoReturn:
    listing = ", ".join(sorted(set(known))) or "none installed"
    raise CheckFailed(f"no plugin named {name!r} is installed{did_you_mean(name, known)} "
                      f"(known: {listing})")


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """"; did you mean 'x'?" when `name` is close to one of `known` (a typo); else ""."""
    import difflib  # only for a name not found

    close = difflib.get_close_matches(name, sorted(set(known)), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def find_plugin(state: State, name: str) -> DiscoveredPlugin:
    """The one installed plugin named `name`; exit 1 saying what is installed, if not."""
    try:
        return find_installed(name, state.config().group)
    except PluginNotFound as exc:
        if exc.reason != Reason.DUPLICATE_NAME:
            unknown(name, exc.installed)
        raise CheckFailed(exc.message) from exc


@contextmanager
def editing(state: State) -> Iterator[Any]:
    """A config edit as a transaction (lock, re-read, change, atomic write): the block runs
    under the lock on the file as it is now, so it must be quick (no sandbox check)."""
    from dihya.config.edit import ApprovalRefused, edit_document  # editors only

    try:
        with edit_document(state.config_path) as doc:
            yield doc
    except ConfigError as exc:
        raise Usage(str(exc)) from exc
    except (ConfigLockTimeout, ApprovalRefused) as exc:
        raise CheckFailed(str(exc)) from exc
    except ConfigFileError as exc:
        raise Usage(str(exc)) from exc
    tell_servers(state)


def tell_servers(state: State) -> None:
    """Bump the state store's version, if there is a store: every running server worker
    sharing it then rebuilds before it answers its next request (read-your-writes for the
    config edit this command just made on this node), instead of within its next poll.
    Best effort: the edit stands when the store cannot take the bump, and the servers still
    see the file within their poll."""
    try:
        store = state.store()
        if store is not None:
            store.bump_state_version()
    except Exception as exc:  # the store's own error says why; the edit is done
        click.echo(f"warning: the config is saved, but the state store could not be told "
                   f"({one_line(exc)}): running servers see the change within their next "
                   "check (0.25 s)", err=True)


def parse_roles(_ctx: click.Context, _param: click.Parameter,
                 value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    roles = tuple(r.strip() for r in value.split(",") if r.strip())
    bad = [r for r in roles if r not in ROLES]
    if bad or not roles:
        raise click.BadParameter(f"roles must be a comma-separated list of "
                                 f"{', '.join(ROLES)}, not {value!r}")
    return roles


F = TypeVar("F", bound=Callable[..., Any])


def approval_options(command: F) -> F:
    """The options an approval records (`approve`, `install`): mode, roles, required."""
    options = [
        click.option("--mode", type=click.Choice(MODES), default=None,
                     help="Where the plugin runs (default: sandbox, or what a previous "
                          "approval said); in-process only for classes that say safe = True."),
        click.option("--roles", callback=parse_roles,
                     help="Comma-separated roles for whom the plugin may run (default: every "
                          "role, or what a previous approval said)."),
        click.option("--required/--not-required", default=None,
                     help="Whether a failure of this plugin fails the generation (default: "
                          "no, or what a previous approval said)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def sqlite_file(config: Config) -> Path | None:
    url = config.effective_store_url
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, OSError) else f"{type(exc).__name__}: {text}"
