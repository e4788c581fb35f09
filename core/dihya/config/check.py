"""A config file's problems at file:line:col (`dihya config check`); the starting config."""

from __future__ import annotations

import re
import secrets
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import attrs

from dihya.config import (
    TABLE_KEYS,
    TABLES,
    ConfigError,
    config_from_document,
)
from dihya.config.publishers import did_you_mean

# `config_from_document` stops at the first problem; check() asks again without the value
# it named, up to this many times, to report them all at once
_MAX_PROBLEMS: Final = 50
_ARRAYS: Final = ("allow", "publishers", "known_pth")


@attrs.frozen
class ConfigProblem:
    """One problem of a config file; `line` and `column` (from 1) when it has a place."""

    path: Path
    message: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}:{self.column}" if self.line else str(self.path)
        return f"{where}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return {"file": str(self.path), "line": self.line, "column": self.column,
                "message": self.message}


Place = tuple[int, int]
Key = tuple[str | int, ...]


def check(path: Path) -> list[ConfigProblem]:
    """Every problem of the config file at `path`: unreadable, not UTF-8, malformed TOML
    (with its line and column), unknown tables and keys (each with a did-you-mean), and
    wrong types or values (at the key's line). Empty when the file is valid."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return [ConfigProblem(path, f"no such file: write one with `dihya config init {path}`")]
    except OSError as exc:
        return [ConfigProblem(path, f"cannot read the config: {exc.strerror or exc}")]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        return [ConfigProblem(path, "the config is not UTF-8 text", line, column)]
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc)) or "malformed"
        if match:
            return [ConfigProblem(path, f"malformed TOML: {reason}", int(match.group(1)),
                                  int(match.group(2)))]
        return [ConfigProblem(path, f"malformed TOML: {reason}")]
    places = locate(text)
    problems: list[ConfigProblem] = []
    pruned = _unknown(path, data, places, problems)
    problems += _values(path, pruned, text, places)
    return sorted(problems, key=lambda p: (p.line or 0, p.column or 0))


def _at(path: Path, message: str, places: dict[Key, Place], *keys: Key) -> ConfigProblem:
    """A problem placed at the first of `keys` found in the file (else without a place)."""
    for key in keys:
        if key in places:
            line, column = places[key]
            return ConfigProblem(path, message, line, column)
    return ConfigProblem(path, message)


def _unknown(path: Path, data: dict[str, Any], places: dict[Key, Place],
             problems: list[ConfigProblem]) -> dict[str, Any]:
    """Report unknown tables and keys; return the document without them."""
    pruned: dict[str, Any] = {}
    for name, table in data.items():
        if name not in TABLES:
            problems.append(_at(path, f"unknown table [{name}]; known: "
                                f"{', '.join(TABLES)}{did_you_mean([name], TABLES)}",
                                places, (name,)))
            continue
        if not isinstance(table, dict):
            problems.append(_at(path, f"`{name}` must be a table ([{name}]), not "
                                f"{_kind(table)}", places, (name,)))
            continue
        pruned[name] = _known_keys(path, (name,), table, TABLE_KEYS[name], places, problems)
        if name != "plugins":
            continue
        for array in _ARRAYS:
            entries = pruned[name].get(array)
            if entries is None:
                continue
            if not isinstance(entries, list):
                problems.append(_at(path, f"`plugins.{array}` must be an array of tables "
                                    f"([[plugins.{array}]]), not {_kind(entries)}",
                                    places, (name, array)))
                del pruned[name][array]
                continue
            kept = []
            for index, entry in enumerate(entries):
                if not isinstance(entry, dict):
                    problems.append(_at(path, f"[[plugins.{array}]] #{index + 1} must be a "
                                        f"table, not {_kind(entry)}", places,
                                        (name, array, index), (name, array)))
                    kept.append(entry)
                    continue
                kept.append(_known_keys(path, (name, array, index), entry,
                                        TABLE_KEYS[f"plugins.{array}"], places, problems))
            pruned[name][array] = kept
    return pruned


def _known_keys(path: Path, where: Key, table: dict[str, Any], known: frozenset[str],
                places: dict[Key, Place], problems: list[ConfigProblem]) -> dict[str, Any]:
    label = _label(where)
    kept = {}
    for key, value in table.items():
        if key in known:
            kept[key] = value
            continue
        problems.append(_at(path, f"{label} has an unknown key {key!r}; known: "
                            f"{', '.join(sorted(known))}{did_you_mean([key], known)}",
                            places, (*where, key), where))
    return kept


def _label(where: Key) -> str:
    if len(where) == 1:
        return f"[{where[0]}]"
    return f"[[{where[0]}.{where[1]}]] #{int(where[2]) + 1}"


def _kind(value: object) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string",
             list: "an array", dict: "a table"}
    return names.get(type(value), type(value).__name__)


# `[table] key ...`, `[[plugins.array]] #N (name 'x'): `key` ...`, `` `table` must ...``
_TABLE_KEY: Final = re.compile(r"^\[(\w+)\] (\w+) ")
_ENTRY_KEY: Final = re.compile(r"^\[\[plugins\.(\w+)\]\] #(\d+)(?: \(name .*?\))?: `(\w+)`")
_ENTRY: Final = re.compile(r"^\[\[plugins\.(\w+)\]\] #(\d+)")
_PLACED: Final = re.compile(r"^:(\d+):(\d+): ")


def _values(path: Path, doc: dict[str, Any], text: str,
            places: dict[Key, Place]) -> list[ConfigProblem]:
    """Wrong types and values, as reading the config finds them, one at a time: each found
    is reported at its key's place and taken out before asking again."""
    problems: list[ConfigProblem] = []
    where = str(path)
    # the original index of each array entry still in `doc` (entries are taken out)
    origin = {a: list(range(len(doc.get("plugins", {}).get(a, [])))) for a in _ARRAYS}
    for _ in range(_MAX_PROBLEMS):
        try:
            config_from_document(path, doc, exists=True, text=text)
        except ConfigError as exc:
            message = exc.message
            rest = message[len(where):] if message.startswith(where) else message
            placed = _PLACED.match(rest)
            if placed:  # the reader already named the place
                problems.append(ConfigProblem(path, rest[placed.end():],
                                              int(placed.group(1)), int(placed.group(2))))
                return problems
            rest = rest.removeprefix(": ")
            if not _take_out(path, rest, doc, origin, places, problems):
                problems.append(ConfigProblem(path, rest))
                return problems
        else:
            return problems
    return problems


def _take_out(path: Path, message: str, doc: dict[str, Any], origin: dict[str, list[int]],
              places: dict[Key, Place], problems: list[ConfigProblem]) -> bool:
    """Record `message` at the place of what it names and remove that from `doc`; False
    when the message names nothing that can be found."""
    match = _TABLE_KEY.match(message)
    if match and isinstance(doc.get(match.group(1)), dict) and match.group(2) in doc[
            match.group(1)]:
        table, key = match.groups()
        problems.append(_at(path, message, places, (table, key), (table,)))
        del doc[table][key]
        return True
    match = _ENTRY_KEY.match(message) or _ENTRY.match(message)
    if match and match.group(1) in origin:
        array, number = match.group(1), int(match.group(2))
        entries = doc.get("plugins", {}).get(array, [])
        if not 1 <= number <= len(entries):
            return False
        index = origin[array][number - 1]
        # the message names the entry by its number in the file, not in what is left
        message = message.replace(f"#{number}", f"#{index + 1}", 1)
        key = match.group(3) if match.re is _ENTRY_KEY else None
        keys: list[Key] = [("plugins", array, index, key)] if key else []
        problems.append(_at(path, message, places, *keys, ("plugins", array, index)))
        del entries[number - 1]
        del origin[array][number - 1]
        return True
    return False


# ---------------------------------------------------------------------------- places

_HEADER: Final = re.compile(r"^[ \t]*(\[\[?)[ \t]*([^\]\n]+?)[ \t]*\]\]?")
_KEY: Final = re.compile(r"""^[ \t]*((?:[A-Za-z0-9_-]+|"[^"\n]*"|'[^'\n]*')"""
                         r"""(?:[ \t]*\.[ \t]*(?:[A-Za-z0-9_-]+|"[^"\n]*"|'[^'\n]*'))*)[ \t]*=""")


def _dotted(text: str) -> tuple[str, ...]:
    parts = re.findall(r"""[A-Za-z0-9_-]+|"[^"\n]*"|'[^'\n]*'""", text)
    return tuple(p[1:-1] if p[:1] in "\"'" else p for p in parts)


def locate(text: str) -> dict[Key, Place]:
    """Where each table header and key of a TOML text is: (table, ..., key) -> (line,
    column), an entry of an array of tables named by its index. Lines inside multi-line
    strings are skipped; only the first place of a key is kept."""
    places: dict[Key, Place] = {}
    counts: dict[tuple[str, ...], int] = {}
    current: Key = ()
    for number, line in _lines(text):
        header = _HEADER.match(line)
        if header and not _KEY.match(line):
            name = _dotted(header.group(2))
            column = header.start(1) + 1
            if header.group(1) == "[[":
                index = counts.get(name, 0)
                counts[name] = index + 1
                current = (*name, index)
            else:
                current = name
            places.setdefault(current, (number, column))
            if len(name) > 1:
                places.setdefault(name, (number, column))
            continue
        key = _KEY.match(line)
        if key:
            column = key.start(1) + 1
            places.setdefault((*current, *_dotted(key.group(1))), (number, column))
    return places


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) outside multi-line strings."""
    inside: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if inside is not None:
            if line.count(inside) % 2 == 1:
                inside = None
            continue
        yield number, line
        for quote in ('"""', "'''"):
            if line.count(quote) % 2 == 1:
                inside = quote
                break


# ---------------------------------------------------------------------------- init

def starting_config(audit_key: str | None = None) -> str:
    """The commented config `dihya config init` writes: valid as it is (it approves
    nothing), every other setting shown commented out with its default."""
    key = audit_key or secrets.token_urlsafe(32)
    return _TEMPLATE.replace("@AUDIT_KEY@", key)


_TEMPLATE: Final = '''\
# Dihya backend config, written by `dihya config init`.
# Reference: docs/operator-guide.md, "The config file". Check it: `dihya config check`.
# Lines starting with `#` show a setting with its default value: uncomment to change it.

[plugins]
# Deadline of one hook call (and one plugin action over HTTP), in seconds (0 < x <= 600).
hook_timeout_s = 2.0
# Rebuild the registry by itself after a `pip install` (else: `dihya plugins reload`).
# auto_reload = false
# Entry-point group in which plugins are discovered.
# group = "dihya.generation_plugins"

# Approvals: `dihya plugins approve NAME` adds one [[plugins.allow]] table per plugin
# (name, distribution, version, fingerprint, mode, roles...), keeping these comments.

[sandbox]
# Each sandbox-mode plugin runs in a worker process of its own with these limits.
# memory_mb = 512          # address-space limit (RLIMIT_AS)
# cpu_seconds = 60         # CPU time over the worker's whole life
# max_calls = 1000         # a worker is replaced after this many calls
# idle_s = 300.0           # an idle worker is stopped after this long
# start_timeout_s = 5.0    # time to start and load the plugin
# scratch_mb = 64          # the worker's private scratch directory
# quarantine_after = 5     # failed calls or sandbox abuses in a row before quarantine (counted
#                          # for the whole fleet in the state store)
# Refuse to run a plugin whose worker lacks an isolation layer (see `dihya doctor`).
# require_isolation = false

[store]
# The state store (tokens, switches, audit log). Default: dihya.sqlite3 beside this file.
# Several workers or nodes: one shared store, e.g. "postgresql+psycopg://dihya@db/dihya".
# url = "sqlite:////var/lib/dihya/dihya.sqlite3"
# synchronous = "full"     # "normal": faster, a power loss may lose the last commits

[web]
# Per-token limit on generations and plugin actions.
# rate_limit = "60/minute"
# Where the limiter counts. "memory://" counts per server worker (with --workers 4, a
# token gets up to 4 times the limit); a shared storage such as "redis://127.0.0.1:6379"
# makes it exact.
# rate_limit_storage = "memory://"

[audit]
# The secret that turns people into pseudonyms in the audit log, drawn at random by
# `dihya config init`. Keep it secret and keep it: a new key gives everyone new pseudonyms.
key = "@AUDIT_KEY@"
# How long audit events are kept, in days.
# retention_days = 365
# Over HTTP (API and console), a purge leaves the events of the last this many days: a
# stolen admin token cannot erase what it just did. `dihya audit purge` on the server is
# not limited. 0 removes the floor (weaker).
# http_purge_min_age_days = 1
'''
