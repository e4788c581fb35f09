"""Edits of the backend config that keep the operator's comments and layout (tomlkit).

Every edit is a transaction (`edit_document`): take the config's edit lock, read the file as
it is now, apply only the change the command means, validate, write atomically, release.
Long checks (an approval's class check in a sandbox worker) run before, never under the
lock; `record_approval` then applies only the approval's own fields to the file of that
moment, so concurrent edits (a `disable` during an `approve`) are all kept.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from dihya.config import UNREADABLE, AllowEntry, ConfigError, Mode, config_from_document
from dihya.config.file import edit_lock, replace_atomically
from dihya.reasons import FixedReasonError, Reason

if TYPE_CHECKING:
    import tomlkit.exceptions
    from tomlkit.toml_document import TOMLDocument


def read_document(path: Path) -> TOMLDocument:
    """Parse the file with tomlkit, or an empty document if it does not exist."""
    import tomlkit  # only edits need it: reading a config uses tomllib
    import tomlkit.exceptions

    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return tomlkit.document()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config: {exc}", UNREADABLE) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: the config is not UTF-8 text: {exc}") from exc
    try:
        return tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as exc:
        raise ConfigError(
            f"{path}:{exc.line}:{exc.col}: malformed TOML: {_parse_reason(exc)}"
        ) from exc


def _parse_reason(exc: tomlkit.exceptions.ParseError) -> str:
    message = str(exc)
    return message.split(" at line ")[0]


def write_document(path: Path, doc: TOMLDocument) -> None:
    """Validate `doc`, then replace the file atomically, keeping its permissions (through
    a symlink: its target is replaced). Hold `edit_lock` around read and write (as
    `edit_document` does) when others may edit the same file."""
    import tomlkit

    text = tomlkit.dumps(doc)
    config_from_document(path, doc, text=text)
    replace_atomically(path, text)


@contextmanager
def edit_document(path: Path) -> Iterator[TOMLDocument]:
    """An edit as a transaction: take the config's edit lock, read the file as it is now,
    let the caller change the document, validate and write it atomically, release.

    Nothing is written if the caller raises. Long checks belong before this block, so the
    lock is held for milliseconds and the edit applies to the file of that moment.
    Raises ConfigError (invalid file or edit) and `dihya.config.file.ConfigFileError`
    (cannot lock or resolve).
    """
    with edit_lock(path):
        doc = read_document(path)
        yield doc
        write_document(path, doc)


def _allow_array(doc: TOMLDocument) -> Any:
    return _tables(doc, "allow")


def _tables(doc: TOMLDocument, key: str) -> Any:
    """`[plugins] KEY` as an array of tables ([[plugins.KEY]]), created if missing. An
    inline array (`KEY = []`, inline tables) becomes one: appending a table to an inline
    array would write invalid TOML."""
    import tomlkit

    if "plugins" not in doc:
        doc["plugins"] = tomlkit.table()
    plugins: Any = doc["plugins"]
    if key not in plugins:
        plugins[key] = tomlkit.aot()
    elif not isinstance(plugins[key], tomlkit.items.AoT):
        aot = tomlkit.aot()
        for item in plugins[key]:
            table = tomlkit.table()
            table.update(item.unwrap() if hasattr(item, "unwrap") else item)
            aot.append(table)
        plugins[key] = aot
    return plugins[key]


class ApprovalRefused(FixedReasonError):
    """The approval cannot be recorded as the file stands now; the message says why."""

    REASON = Reason.UNSAFE_IN_PROCESS


@attrs.frozen
class Approval:
    """An approval to record: the plugin as it was checked, and only the choices made for
    this approval. `None` keeps what the file says when the edit applies (else the default),
    so an approval never writes back a switch, role or flag read before its checks."""

    name: str
    distribution: str
    version: str
    fingerprint: str
    mode: Mode | None = None
    roles: tuple[str, ...] | None = None
    required: bool | None = None
    publisher: str | None = None  # a signed install's publisher; None: approved by hand
    safe: bool = False  # the checked class says safe = True: it may run in-process


def _entry_table(allow: Any, name: str, version: str) -> Any:
    """The table an approval of `name` `version` updates: the one of that version, else
    the first of that name (an upgrade replaces it), else None (a new entry)."""
    tables = [t for t in allow if t.get("name") == name]
    return next((t for t in tables if t.get("version") == version),
                tables[0] if tables else None)


def record_approval(doc: TOMLDocument, approval: Approval) -> AllowEntry:
    """Apply `approval` to the document as it is now; the entry as recorded.

    The on/off switch and its reason are never touched (a new entry starts enabled).
    ApprovalRefused if the file now asks for in-process and the class is not safe.
    """
    allow = _allow_array(doc)
    table = _entry_table(allow, approval.name, approval.version)
    current: dict[str, Any] = table.unwrap() if table is not None else {}
    mode = approval.mode or current.get("mode", "sandbox")
    if mode == "in-process" and not approval.safe:
        raise ApprovalRefused(
            f"cannot approve {approval.name!r} in-process: its class says safe = False "
            "(the config asks for mode = \"in-process\"); approve it with --mode sandbox")
    values: dict[str, Any] = {
        "name": approval.name, "distribution": approval.distribution,
        "version": approval.version, "fingerprint": approval.fingerprint, "mode": mode,
        "required": (approval.required if approval.required is not None
                     else current.get("required", False)),
    }
    if approval.roles is not None:
        values["roles"] = list(approval.roles)
    if approval.publisher is not None:
        values["publisher"] = approval.publisher
    if table is None:
        import tomlkit

        table = tomlkit.table()
        values["enabled"] = True
        allow.append(table)
    elif approval.publisher is None and "publisher" in table:
        del table["publisher"]  # approved by the operator now, not by a signature
    for key, value in values.items():
        table[key] = value
    recorded: dict[str, Any] = table.unwrap()
    roles = recorded.get("roles")
    return AllowEntry(
        name=approval.name, distribution=approval.distribution, version=approval.version,
        fingerprint=approval.fingerprint, mode=mode, roles=tuple(roles) if roles else None,
        enabled=recorded.get("enabled", True), required=values["required"],
        disabled_reason=recorded.get("disabled_reason"), publisher=approval.publisher)


def record_next_version(doc: TOMLDocument, approval: Approval) -> AllowEntry:
    """Approve `approval.version` of a plugin **beside** the version(s) already approved
    (the next version, before it is installed): a new table that starts with the current
    entry's mode, roles, required flag and on/off switch, so the installed version keeps
    running until the new one is installed. Where that version already has a table (or the
    plugin none at all), this is `record_approval`."""
    import tomlkit

    allow = _allow_array(doc)
    tables = [t for t in allow if t.get("name") == approval.name]
    if tables and not any(t.get("version") == approval.version for t in tables):
        current = tables[0].unwrap()
        table = tomlkit.table()
        table["name"], table["version"] = approval.name, approval.version
        for key in ("mode", "roles", "required", "enabled", "disabled_reason"):
            if key in current:
                table[key] = current[key]
        allow.append(table)
    return record_approval(doc, approval)


def upsert_allow(doc: TOMLDocument, entry: AllowEntry) -> None:
    """Record every value of `entry` (an unset role list or publisher is removed), in the
    entry of the same name and version, else the first of that name; keeps its switch."""
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
    table = _entry_table(allow, entry.name, entry.version)
    if table is not None:
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


def remove_allow(doc: TOMLDocument, name: str, version: str | None = None) -> bool:
    """Drop every entry named `name` (only the one of `version`, when given); False if
    there was none. When none is left, the file says `allow = []`: an empty allowlist on
    purpose, which a running server takes (an allowlist that merely disappeared, it does
    not: see `config_problem`)."""
    import tomlkit

    allow = _allow_array(doc)
    keep = [i for i, t in enumerate(allow) if t.get("name") != name
            or (version is not None and t.get("version") != version)]
    if len(keep) == len(allow):
        return False
    for i in reversed(range(len(allow))):
        if i not in keep:
            del allow[i]
    if not keep:
        empty = tomlkit.array()
        empty.comment("nothing approved: every approval was revoked")
        doc["plugins"]["allow"] = empty
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


def add_known_pth(doc: TOMLDocument, values: Mapping[str, str]) -> bool:
    """Add a `[[plugins.known_pth]]` table with `values` (file, sha256, note); False if an
    entry already acknowledges that file with that content (its note is then updated)."""
    import tomlkit

    known = _tables(doc, "known_pth")
    for table in known:
        if (table.get("file"), str(table.get("sha256", "")).lower()) == (
                values["file"], values["sha256"]):
            if values.get("note"):
                table["note"] = values["note"]
            return False
    table = tomlkit.table()
    table.trivia.indent = "\n"  # a blank line before its header, for whoever reads the file
    for key, value in values.items():
        table[key] = value
    known.append(table)
    return True
