"""The backend config (TOML): reading it into a typed, validated model.

Path: `--config`, else `DIHYA_CONFIG`, else `./dihya.toml`. Reading validates every value
and names the file, line and what was expected. Edits that keep comments are in
`dihya.config.edit`; the file itself (lock, atomic replacement) in `dihya.config.file`.

An *empty* config (the file parses to no table and no key: zero bytes, whitespace or
comments only) approves nothing, like a missing one; `config_problem` tells a running server
which new configs it must not take in place of its last good one.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal

import attrs

from dihya.config.knownpth import KNOWN_PTH_KEYS, KnownPth, parse_known_pth
from dihya.config.publishers import (
    PUBLISHER_KEYS,
    Publisher,
    array_entry,
    did_you_mean,
    parse_publishers,
)
from dihya.plugin import DEFAULT_GROUP
from dihya.reasons import DihyaError

MODES: Final = ("sandbox", "in-process")
ROLES: Final = ("admin", "developer", "viewer")
ENV_CONFIG: Final = "DIHYA_CONFIG"
ENV_DISABLE: Final = "DIHYA_PLUGINS_DISABLE"
Mode = Literal["sandbox", "in-process"]


# Why a config on disk is not (or must not become) the one in use: reason codes shown by
# `/readyz`, logged and audited by a running server, and reported by `plugins verify`.
MISSING: Final = "missing-config"
UNREADABLE: Final = "unreadable-config"
EMPTY: Final = "empty-config"
INVALID: Final = "invalid-config"
ALLOWLIST_DROPPED: Final = "allowlist-dropped"
PROBLEMS: Final = {
    MISSING: "the config file does not exist",
    UNREADABLE: "the config file cannot be read (permissions, a directory, an I/O error)",
    EMPTY: "the config file is empty (no table, no key)",
    INVALID: "the config file is malformed or invalid (`dihya plugins list` names the line)",
    ALLOWLIST_DROPPED: "every [[plugins.allow]] entry disappeared without an explicit "
                       "`allow = []`",
}


class ConfigError(DihyaError):
    """The config file is unreadable or invalid; the message says where and what, `reason`
    is one of `PROBLEMS` (`invalid-config` unless said)."""

    def __init__(self, message: str, reason: str = INVALID) -> None:
        super().__init__(reason, message)


@attrs.frozen
class AllowEntry:
    """One approval: the plugin whose name, distribution, version and fingerprint match."""

    name: str
    distribution: str
    version: str
    fingerprint: str
    mode: Mode = "sandbox"
    roles: tuple[str, ...] | None = None
    enabled: bool = True
    required: bool = False
    disabled_reason: str | None = None
    publisher: str | None = None  # set by `plugins install` of a signed wheel


@attrs.frozen
class SandboxSettings:
    """`[sandbox]`: how sandbox workers are started, limited, recycled and reaped."""

    start_timeout_s: float = 20.0
    memory_mb: int = 512
    scratch_mb: int = 64
    cpu_seconds: int = 60
    max_calls: int = 1000
    idle_s: float = 300.0
    quarantine_after: int = 5
    require_isolation: bool = False
    # a root backend whose workers cannot run as an unprivileged user: start them as root
    # (capabilities dropped) instead of refusing them; off unless the operator opts in
    allow_root: bool = False


_SANDBOX_KEYS: Final = {
    "start_timeout_s": (float, 0.1, 120), "memory_mb": (int, 64, 65536),
    "cpu_seconds": (int, 1, 86400), "max_calls": (int, 1, 10**9),
    "idle_s": (float, 1, 86400), "quarantine_after": (int, 1, 10**6),
    "scratch_mb": (int, 1, 65536),
}


ENTRY_KEYS: Final = frozenset({
    "name", "distribution", "version", "fingerprint", "mode", "roles", "enabled", "required",
    "disabled_reason", "publisher",
})
# The keys each table may hold: the one list that reading (here) and `dihya config check`
# (dihya.config.check) go by; an array of tables is named by its dotted path.
TABLE_KEYS: Final[Mapping[str, frozenset[str]]] = {
    "plugins": frozenset({"group", "hook_timeout_s", "auto_reload", "allow", "publishers",
                          "known_pth", "log_records", "log_record_bytes"}),
    "store": frozenset({"url", "synchronous"}),
    "web": frozenset({"rate_limit", "rate_limit_storage"}),
    "audit": frozenset({"key", "retention_days", "plugin_log_retention_days",
                        "http_purge_min_age_days"}),
    "sandbox": frozenset({*_SANDBOX_KEYS, "require_isolation", "allow_root"}),
    "plugins.allow": ENTRY_KEYS,
    "plugins.publishers": PUBLISHER_KEYS,
    "plugins.known_pth": KNOWN_PTH_KEYS,
}
TABLES: Final = ("plugins", "store", "web", "audit", "sandbox")


@attrs.frozen
class Config:
    """The parsed backend config."""

    path: Path
    exists: bool
    empty: bool = False  # the file exists but holds no table and no key
    allow_declared: bool = False  # `[plugins] allow` is in the file (`allow = []` counts)
    group: str = DEFAULT_GROUP
    hook_timeout_s: float = 2.0
    allow: tuple[AllowEntry, ...] = ()
    auto_reload: bool = False
    publishers: tuple[Publisher, ...] = ()
    known_pth: tuple[KnownPth, ...] = ()
    store_url: str | None = None
    # "full": a committed transaction survives power loss; "normal": any process crash
    # (see `dihya.store.SYNCHRONOUS`)
    store_synchronous: str = "full"
    rate_limit: str = "60/minute"
    rate_limit_storage: str = "memory://"
    audit_key: str | None = None
    audit_retention_days: float = 365.0
    # plugins' own log records: kept this long, and per plugin per generation at most
    # `plugin_log_records` records of at most `plugin_log_bytes` bytes (`dihya.pluginlog`)
    plugin_log_retention_days: float = 30.0
    plugin_log_records: int = 200
    plugin_log_bytes: int = 2000
    # over HTTP (API and console) a purge leaves the events of the last this many days
    # (`dihya.web.audit_api`); `dihya audit purge` is not limited; 0: no floor
    http_purge_min_age_days: float = 1.0
    sandbox: SandboxSettings = attrs.field(factory=lambda: SandboxSettings())

    @property
    def effective_store_url(self) -> str:
        """`[store] url`, else a SQLite file `dihya.sqlite3` beside the config file."""
        if self.store_url:
            return self.store_url
        return f"sqlite:///{self.path.absolute().parent / 'dihya.sqlite3'}"

    def entries_for(self, name: str) -> tuple[AllowEntry, ...]:
        return tuple(e for e in self.allow if e.name == name)


def resolve_path(explicit: str | os.PathLike[str] | None) -> Path:
    """`--config`, else `DIHYA_CONFIG`, else `./dihya.toml`."""
    if explicit:
        return Path(explicit)
    return Path(os.environ.get(ENV_CONFIG) or "dihya.toml")


def env_disabled(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """Entry-point names listed in `DIHYA_PLUGINS_DISABLE` (comma separated)."""
    raw = (os.environ if environ is None else environ).get(ENV_DISABLE, "")
    return frozenset(n.strip() for n in raw.split(",") if n.strip())


def load_config(path: Path) -> Config:
    """Read and validate the config at `path`; a missing file is an empty config.

    Reading uses the standard library's `tomllib` (several times faster than tomlkit,
    which is kept for edits, where comments must survive).
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return config_from_document(path, {}, exists=False)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config: {exc}", UNREADABLE) from exc
    try:
        text = raw.decode("utf-8")
        data = tomllib.loads(text)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: the config is not UTF-8 text: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}:{_toml_position(exc)}: malformed TOML: "
                          f"{_toml_reason(exc)}") from exc
    return config_from_document(path, data, exists=True, text=text)


_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")


def _toml_position(exc: tomllib.TOMLDecodeError) -> str:
    match = _POSITION.search(str(exc))
    return f"{match.group(1)}:{match.group(2)}" if match else "?"


def _toml_reason(exc: tomllib.TOMLDecodeError) -> str:
    return _POSITION.sub("", str(exc)).strip()


def config_from_document(path: Path, doc: Mapping[str, Any], exists: bool = True,
                         text: str | None = None) -> Config:
    """Validate a parsed config; `text`, the file's text, lets errors name lines."""
    unwrap = getattr(doc, "unwrap", None)  # a tomlkit document, when validating an edit
    data = unwrap() if callable(unwrap) else dict(doc)
    where = str(path)
    unknown_tables = set(data) - set(TABLES)
    if unknown_tables:
        raise ConfigError(f"{where}: unknown tables {sorted(unknown_tables)}; known: plugins, "
                          f"store, web, audit, sandbox{did_you_mean(unknown_tables, TABLES)}")
    sandbox = _sandbox_settings(where, _table(where, data, "sandbox"))
    store = _table(where, data, "store")
    web = _table(where, data, "web")
    audit = _table(where, data, "audit")
    store_url = _optional_str(where, "store", store, "url")
    synchronous = _optional_str(where, "store", store, "synchronous") or "full"
    if synchronous not in ("full", "normal"):
        raise ConfigError(f"{where}: [store] synchronous must be \"full\" (a committed write "
                          f"survives power loss) or \"normal\" (any process crash), not "
                          f"{synchronous!r}")
    rate_limit = _optional_str(where, "web", web, "rate_limit") or "60/minute"
    if not re.match(r"^\d+\s*(/|per)\s*\w+", rate_limit):
        raise ConfigError(f"{where}: [web] rate_limit must look like '60/minute', not "
                          f"{rate_limit!r}")
    storage = _optional_str(where, "web", web, "rate_limit_storage") or "memory://"
    audit_key = _optional_str(where, "audit", audit, "key")
    retention = audit.get("retention_days", 365)
    if isinstance(retention, bool) or not isinstance(retention, int | float) or not (
            0 < retention <= 36500):
        raise ConfigError(f"{where}: [audit] retention_days must be a number of days between "
                          f"0 and 36500, not {retention!r}")
    log_retention = audit.get("plugin_log_retention_days", 30)
    if isinstance(log_retention, bool) or not isinstance(log_retention, int | float) or not (
            0 < log_retention <= 36500):
        raise ConfigError(f"{where}: [audit] plugin_log_retention_days must be a number of "
                          f"days between 0 and 36500, not {log_retention!r}")
    purge_floor = audit.get("http_purge_min_age_days", 1)
    if isinstance(purge_floor, bool) or not isinstance(purge_floor, int | float) or not (
            0 <= purge_floor <= 36500):
        raise ConfigError(f"{where}: [audit] http_purge_min_age_days must be a number of "
                          f"days between 0 (no floor) and 36500, not {purge_floor!r}")
    plugins = _table(where, data, "plugins")
    log_records = _bounded_int(where, plugins, "log_records", 200, 0, 1000)
    log_bytes = _bounded_int(where, plugins, "log_record_bytes", 2000, 256, 16384)
    auto_reload = _bool(where, "plugins", plugins, "auto_reload", False)
    group = plugins.get("group", DEFAULT_GROUP)
    if not isinstance(group, str) or not group:
        raise ConfigError(f"{where}: [plugins] group must be a non-empty string")
    timeout = plugins.get("hook_timeout_s", 2.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 600:
        raise ConfigError(f"{where}: [plugins] hook_timeout_s must be a number of seconds "
                          f"between 0 and 600, not {timeout!r}")
    raw_allow = plugins.get("allow", [])
    if not isinstance(raw_allow, list):
        raise ConfigError(f"{where}: `plugins.allow` must be an array of tables "
                          "([[plugins.allow]])")
    allow = tuple(_allow_entry(where, i, raw) for i, raw in enumerate(raw_allow, 1))
    _refuse_duplicates(where, allow, text)
    try:
        publishers = parse_publishers(plugins.get("publishers", []))
        known_pth = parse_known_pth(plugins.get("known_pth", []))
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return Config(path=path, exists=exists, empty=exists and not data,
                  allow_declared="allow" in plugins, group=group, hook_timeout_s=float(timeout),
                  allow=allow, auto_reload=auto_reload, publishers=publishers,
                  known_pth=known_pth,
                  store_url=store_url, store_synchronous=synchronous, rate_limit=rate_limit,
                  rate_limit_storage=storage, audit_key=audit_key,
                  audit_retention_days=float(retention),
                  plugin_log_retention_days=float(log_retention),
                  http_purge_min_age_days=float(purge_floor),
                  plugin_log_records=log_records, plugin_log_bytes=log_bytes, sandbox=sandbox)


def _bounded_int(where: str, table: Mapping[str, Any], key: str, default: int, low: int,
                 high: int) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{where}: [plugins] {key} must be a whole number between {low} "
                          f"and {high}, not {value!r}")
    return value


def _sandbox_settings(where: str, table: Mapping[str, Any]) -> SandboxSettings:
    values: dict[str, Any] = {}
    for key, (kind, low, high) in _SANDBOX_KEYS.items():
        if key not in table:
            continue
        value = table[key]
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if kind is int:
            ok = ok and isinstance(value, int)
        if not ok or not low <= value <= high:
            noun = "a whole number" if kind is int else "a number"
            raise ConfigError(f"{where}: [sandbox] {key} must be {noun} between {low} and "
                              f"{high}, not {value!r}")
        values[key] = kind(value)
    for flag in ("require_isolation", "allow_root"):
        if flag in table:
            values[flag] = _bool(where, "sandbox", table, flag, False)
    return SandboxSettings(**values)


def _table(where: str, data: Mapping[str, Any], name: str) -> dict[str, Any]:
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: `{name}` must be a table ([{name}])")
    keys = TABLE_KEYS[name]
    unknown = set(table) - keys
    if unknown:
        raise ConfigError(f"{where}: [{name}] has unknown keys {sorted(unknown)}; known: "
                          f"{', '.join(sorted(keys))}{did_you_mean(unknown, keys)}")
    return table


def _bool(where: str, table_name: str, table: Mapping[str, Any], key: str,
          default: bool) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: [{table_name}] {key} must be true or false, not {value!r}")
    return value


def _optional_str(where: str, table_name: str, table: Mapping[str, Any], key: str) -> str | None:
    value = table.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(f"{where}: [{table_name}] {key} must be a non-empty string")
    return value


def _allow_entry(where: str, index: int, raw: object) -> AllowEntry:
    try:
        raw, label = array_entry(f"{where}: [[plugins.allow]] #{index}", raw, ENTRY_KEYS)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    for key in ("name", "distribution", "version", "fingerprint"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise ConfigError(f"{label}: `{key}` is required and must be a non-empty string")
    if not raw["fingerprint"].startswith("sha256:"):
        raise ConfigError(f"{label}: `fingerprint` must look like 'sha256:<hex>', as printed "
                          "by `dihya plugins fingerprint`")
    mode = raw.get("mode", "sandbox")
    if mode not in MODES:
        raise ConfigError(f"{label}: `mode` must be 'sandbox' or 'in-process', not {mode!r}")
    roles = raw.get("roles")
    if roles is not None:
        if not isinstance(roles, list) or not all(r in ROLES for r in roles):
            raise ConfigError(f"{label}: `roles` must be a list of {', '.join(ROLES)}, "
                              f"not {roles!r}")
        roles = tuple(roles)
    for key in ("enabled", "required"):
        if key in raw and not isinstance(raw[key], bool):
            raise ConfigError(f"{label}: `{key}` must be true or false, not {raw[key]!r}")
    reason = raw.get("disabled_reason")
    if reason is not None and not isinstance(reason, str):
        raise ConfigError(f"{label}: `disabled_reason` must be a string")
    publisher = raw.get("publisher")
    if publisher is not None and (not isinstance(publisher, str) or not publisher):
        raise ConfigError(f"{label}: `publisher` must be the name of a [[plugins.publishers]] "
                          "entry")
    return AllowEntry(
        name=raw["name"], distribution=raw["distribution"], version=raw["version"],
        fingerprint=raw["fingerprint"], mode=mode, roles=roles,
        enabled=raw.get("enabled", True), required=raw.get("required", False),
        disabled_reason=reason, publisher=publisher,
    )


# `[[plugins.allow]]` at the start of a line, however its keys are spaced or quoted
_ALLOW_HEADER: Final = re.compile(
    r"""^[ \t]*\[\[[ \t]*(?:plugins|"plugins"|'plugins')[ \t]*\.[ \t]*"""
    r"""(?:allow|"allow"|'allow')[ \t]*\]\]""", re.MULTILINE)


def _refuse_duplicates(where: str, allow: Sequence[AllowEntry], text: str | None) -> None:
    """Two entries for one plugin name and version: which one applies would depend on their
    order, so the config is refused, naming both. (One name in several versions is fine:
    the installed version's entry applies, so the next one can be approved beforehand.)"""
    seen: dict[tuple[str, str], int] = {}
    for index, entry in enumerate(allow):
        first = seen.setdefault((entry.name, entry.version), index)
        if first != index:
            at_first, at_again = (_entry_position(where, text, len(allow), i)
                                  for i in (first, index))
            raise ConfigError(
                f"{at_again}: [[plugins.allow]] #{index + 1} allows {entry.name!r} "
                f"{entry.version} again, already allowed by #{first + 1} at {at_first}: "
                "which one applies would depend on their order. Keep one table per plugin "
                "name and version: delete or merge the other")


def _entry_position(where: str, text: str | None, count: int, index: int) -> str:
    """`file:line:col` of the index-th `[[plugins.allow]]` header; just `file` when the
    headers cannot be matched to the entries one to one (an inline `allow = [...]`)."""
    if text is None:
        return where
    # the offset of each header's `[[`, past any indentation
    starts = [m.end() - len(m.group(0).lstrip()) for m in _ALLOW_HEADER.finditer(text)]
    if len(starts) != count:
        return where
    offset = starts[index]
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return f"{where}:{line}:{column}"


def config_problem(new: Config, running: Config | None) -> str | None:
    """Why a running server must not take `new` as its config (a reason code of
    `PROBLEMS`), or None. `running`: the config it serves, None when it has none yet.

    A missing or empty file is an accident until proven otherwise (a truncating editor, a
    failed deploy, a deleted volume); so is a file that lost every approval without saying
    `allow = []`. Removing every approval is done by `dihya plugins revoke` (which writes
    `allow = []` for the last one) or by writing `allow = []` by hand.
    """
    if not new.exists:
        return MISSING
    if new.empty:
        return EMPTY
    if running is not None and running.allow and not new.allow and not new.allow_declared:
        return ALLOWLIST_DROPPED
    return None
