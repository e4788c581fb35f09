"""The backend config (TOML): reading it into a typed model, and edits that keep comments.

Path: `--config`, else `DIHYA_CONFIG`, else `./dihya.toml`. Reading validates every value
and names the file, line and what was expected; edits go through tomlkit so an operator's
comments and layout survive, and are written atomically.
"""

from __future__ import annotations

import os
import re
import tempfile
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs

from dihya.discovery import DEFAULT_GROUP
from dihya.publishers import Publisher, array_entry, parse_publishers
from dihya.startup import KnownPth, parse_known_pth

if TYPE_CHECKING:
    import tomlkit.exceptions
    from tomlkit.toml_document import TOMLDocument

MODES: Final = ("sandbox", "in-process")
ROLES: Final = ("admin", "developer", "viewer")
ENV_CONFIG: Final = "DIHYA_CONFIG"
ENV_DISABLE: Final = "DIHYA_PLUGINS_DISABLE"
Mode = Literal["sandbox", "in-process"]


class ConfigError(Exception):
    """The config file is unreadable or invalid; the message says where and what."""


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

    start_timeout_s: float = 5.0
    memory_mb: int = 512
    cpu_seconds: int = 60
    max_calls: int = 1000
    idle_s: float = 300.0
    quarantine_after: int = 5
    require_isolation: bool = False


_SANDBOX_KEYS: Final = {
    "start_timeout_s": (float, 0.1, 120), "memory_mb": (int, 64, 65536),
    "cpu_seconds": (int, 1, 86400), "max_calls": (int, 1, 10**9),
    "idle_s": (float, 1, 86400), "quarantine_after": (int, 1, 10**6),
}


@attrs.frozen
class Config:
    """The parsed backend config."""

    path: Path
    exists: bool
    group: str = DEFAULT_GROUP
    hook_timeout_s: float = 2.0
    allow: tuple[AllowEntry, ...] = ()
    auto_reload: bool = False
    publishers: tuple[Publisher, ...] = ()
    known_pth: tuple[KnownPth, ...] = ()
    store_url: str | None = None
    rate_limit: str = "60/minute"
    rate_limit_storage: str = "memory://"
    audit_key: str | None = None
    audit_retention_days: float = 365.0
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


def read_document(path: Path) -> TOMLDocument:
    """Parse the file with tomlkit, or an empty document if it does not exist."""
    import tomlkit  # only edits need it: reading a config uses tomllib
    import tomlkit.exceptions

    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return tomlkit.document()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config: {exc}") from exc
    try:
        return tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as exc:
        raise ConfigError(
            f"{path}:{exc.line}:{exc.col}: malformed TOML: {_parse_reason(exc)}"
        ) from exc


def _parse_reason(exc: tomlkit.exceptions.ParseError) -> str:
    message = str(exc)
    return message.split(" at line ")[0]


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
        raise ConfigError(f"{path}: cannot read the config: {exc}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: the config is not UTF-8 text: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}:{_toml_position(exc)}: malformed TOML: "
                          f"{_toml_reason(exc)}") from exc
    return config_from_document(path, data, exists=True)


_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")


def _toml_position(exc: tomllib.TOMLDecodeError) -> str:
    match = _POSITION.search(str(exc))
    return f"{match.group(1)}:{match.group(2)}" if match else "?"


def _toml_reason(exc: tomllib.TOMLDecodeError) -> str:
    return _POSITION.sub("", str(exc)).strip()


def config_from_document(path: Path, doc: Mapping[str, Any], exists: bool = True) -> Config:
    unwrap = getattr(doc, "unwrap", None)  # a tomlkit document, when validating an edit
    data = unwrap() if callable(unwrap) else dict(doc)
    where = str(path)
    unknown_tables = set(data) - {"plugins", "store", "web", "audit", "sandbox"}
    if unknown_tables:
        raise ConfigError(f"{where}: unknown tables {sorted(unknown_tables)}; known: plugins, "
                          "store, web, audit, sandbox")
    sandbox = _sandbox_settings(where, _table(where, data, "sandbox",
                                              {*_SANDBOX_KEYS, "require_isolation"}))
    store = _table(where, data, "store", {"url"})
    web = _table(where, data, "web", {"rate_limit", "rate_limit_storage"})
    audit = _table(where, data, "audit", {"key", "retention_days"})
    store_url = _optional_str(where, "store", store, "url")
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
    plugins = _table(where, data, "plugins", {"group", "hook_timeout_s", "auto_reload",
                                              "allow", "publishers", "known_pth"})
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
    try:
        publishers = parse_publishers(plugins.get("publishers", []))
        known_pth = parse_known_pth(plugins.get("known_pth", []))
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return Config(path=path, exists=exists, group=group, hook_timeout_s=float(timeout),
                  allow=allow, auto_reload=auto_reload, publishers=publishers,
                  known_pth=known_pth,
                  store_url=store_url, rate_limit=rate_limit,
                  rate_limit_storage=storage, audit_key=audit_key,
                  audit_retention_days=float(retention), sandbox=sandbox)


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
    if "require_isolation" in table:
        values["require_isolation"] = _bool(where, "sandbox", table, "require_isolation", False)
    return SandboxSettings(**values)


def _table(where: str, data: Mapping[str, Any], name: str, keys: set[str]) -> dict[str, Any]:
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: `{name}` must be a table ([{name}])")
    unknown = set(table) - keys
    if unknown:
        raise ConfigError(f"{where}: [{name}] has unknown keys {sorted(unknown)}; known: "
                          f"{', '.join(sorted(keys))}")
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


_ENTRY_KEYS: Final = {
    "name", "distribution", "version", "fingerprint", "mode", "roles", "enabled", "required",
    "disabled_reason", "publisher",
}


def _allow_entry(where: str, index: int, raw: object) -> AllowEntry:
    try:
        raw, label = array_entry(f"{where}: [[plugins.allow]] #{index}", raw, _ENTRY_KEYS)
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


def write_document(path: Path, doc: TOMLDocument) -> None:
    """Validate `doc`, then replace the file atomically, keeping its permissions."""
    import tomlkit

    config_from_document(path, doc)
    text = tomlkit.dumps(doc)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _allow_array(doc: TOMLDocument) -> Any:
    import tomlkit

    if "plugins" not in doc:
        doc["plugins"] = tomlkit.table()
    plugins: Any = doc["plugins"]
    if "allow" not in plugins:
        plugins["allow"] = tomlkit.aot()
    elif not isinstance(plugins["allow"], tomlkit.items.AoT):
        # `allow = []` or inline tables: appending a table to an inline array would
        # write invalid TOML, so the array becomes [[plugins.allow]] tables
        aot = tomlkit.aot()
        for item in plugins["allow"]:
            table = tomlkit.table()
            table.update(item.unwrap() if hasattr(item, "unwrap") else item)
            aot.append(table)
        plugins["allow"] = aot
    return plugins["allow"]


def add_known_pth(doc: TOMLDocument, values: Mapping[str, str]) -> bool:
    """Add a `[[plugins.known_pth]]` table with `values` (file, sha256, note); False if an
    entry already acknowledges that file with that content (its note is then updated)."""
    import tomlkit

    if "plugins" not in doc:
        doc["plugins"] = tomlkit.table()
    plugins: Any = doc["plugins"]
    if "known_pth" not in plugins:
        plugins["known_pth"] = tomlkit.aot()
    elif not isinstance(plugins["known_pth"], tomlkit.items.AoT):
        # `known_pth = [{...}]`: appending a table to an inline array would write invalid
        # TOML, so it becomes [[plugins.known_pth]] tables (as `_allow_array` does)
        aot = tomlkit.aot()
        for item in plugins["known_pth"]:
            table = tomlkit.table()
            table.update(item.unwrap() if hasattr(item, "unwrap") else item)
            aot.append(table)
        plugins["known_pth"] = aot
    for table in plugins["known_pth"]:
        if (table.get("file"), str(table.get("sha256", "")).lower()) == (
                values["file"], values["sha256"]):
            if values.get("note"):
                table["note"] = values["note"]
            return False
    table = tomlkit.table()
    table.trivia.indent = "\n"  # a blank line before its header, for whoever reads the file
    for key, value in values.items():
        table[key] = value
    plugins["known_pth"].append(table)
    return True


def upsert_allow(doc: TOMLDocument, entry: AllowEntry) -> None:
    """Record `entry`, replacing the values of an existing entry of the same name."""
    allow = _allow_array(doc)
    values: dict[str, Any] = {
        "name": entry.name, "distribution": entry.distribution, "version": entry.version,
        "fingerprint": entry.fingerprint, "mode": entry.mode,
    }
    if entry.roles is not None:
        values["roles"] = list(entry.roles)
    values["required"] = entry.required
    if entry.publisher is not None:
        values["publisher"] = entry.publisher
    for table in allow:
        if table.get("name") == entry.name:
            # a re-approval keeps the operator's on/off switch and its reason
            for key, value in values.items():
                table[key] = value
            if entry.roles is None and "roles" in table:
                del table["roles"]
            if entry.publisher is None and "publisher" in table:
                del table["publisher"]  # approved by the operator now, not by a signature
            return
    values["enabled"] = entry.enabled
    import tomlkit

    table = tomlkit.table()
    for key, value in values.items():
        table[key] = value
    allow.append(table)


def remove_allow(doc: TOMLDocument, name: str) -> bool:
    """Drop every entry named `name`; False if there was none."""
    allow = _allow_array(doc)
    keep = [i for i, t in enumerate(allow) if t.get("name") != name]
    if len(keep) == len(allow):
        return False
    for i in reversed(range(len(allow))):
        if i not in keep:
            del allow[i]
    if not keep:  # an empty array of tables would be written as `allow = []`
        del doc["plugins"]["allow"]
    return True


def set_enabled(doc: TOMLDocument, name: str, enabled: bool, reason: str | None) -> bool:
    """Switch every entry named `name` on or off; False if there was none."""
    hit = False
    for table in _allow_array(doc):
        if table.get("name") == name:
            hit = True
            table["enabled"] = enabled
            if enabled or not reason:
                if "disabled_reason" in table:
                    del table["disabled_reason"]
            else:
                table["disabled_reason"] = reason
    return hit
