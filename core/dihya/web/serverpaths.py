"""What an answer to a non-admin role may say about the server's files: their names only.

The gate's messages name the files they are about with their absolute paths ("not in the
allowlist of /etc/dihya/dihya.toml", a `.pth` file or a missing file under site-packages,
a sandbox warning about a directory the worker cannot read). An admin operates the
server and keeps them whole; a `viewer` or `developer` token, which only reads listings or
generates, would learn the backend's config directory and site-packages layout from them.
`for_role` gives the function every plugin answer passes its free texts through: for a
non-admin role it names a file under a known directory (the config's, a site directory,
an entry of `sys.path`) relative to it (`dihya.toml`, `evil.pth`), and any other absolute
path by its last component; it changes no field, only the text. The unauthenticated
`/readyz` already leaves directories out (`dihya.gate.startup.pth_json`).

Applied where answers are serialised for a role: the API's plugin rows (`plugin_row`) and
generation reports (`report_for`), the console's plugin views.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final

from dihya.gate.startup import site_directories

#: What a role's answers say about paths: the text itself, or the text with paths cut.
PathFilter = Callable[[str], str]

#: The one role that sees the server's paths.
PATH_ROLE: Final = "admin"

# a path starts at a `/` that does not continue a word, a relative path or a URL
_START: Final = r"(?<![\w.~:/\\-])"
# its components: anything but white space, `/` and the punctuation that ends a path in a
# sentence (quotes, brackets, separators)
_PART: Final = r"[^\s/'\"`;,()<>\[\]{}|]+"
_ABSOLUTE: Final = re.compile(_START + rf"/(?:{_PART}/)*({_PART})")


def keep_paths(text: str) -> str:
    """An admin's filter: the text as it is."""
    return text


def known_directories(config_path: Path | None) -> list[str]:
    """The directories whose files are named relative to them: the config file's, the site
    directories and every absolute entry of `sys.path` (where plugins are installed)."""
    found: set[str] = set()
    candidates: list[str | Path] = [*site_directories(), *sys.path]
    if config_path is not None:
        candidates += [config_path.parent, config_path.absolute().parent]
        with contextlib.suppress(OSError, RuntimeError):
            candidates.append(config_path.resolve().parent)
    for entry in candidates:
        text = os.fspath(entry).rstrip("/")
        if text.startswith("/"):
            found.add(text)
            with contextlib.suppress(OSError, ValueError):
                found.add(os.path.realpath(text))
    return sorted(found, key=len, reverse=True)  # the longest (most specific) first


def file_names_only(directories: Iterable[str]) -> PathFilter:
    """A filter that names files under `directories` relative to them and cuts any other
    absolute path to its last component."""
    names = [re.escape(d) for d in directories if d]
    under = re.compile(_START + "(?:" + "|".join(names) + ")/") if names else None

    def cut(text: str) -> str:
        if "/" not in text:
            return text
        if under is not None:
            text = under.sub("", text)
        return _ABSOLUTE.sub(r"\1", text)

    return cut


def for_role(role: str | None, config_path: Path | None) -> PathFilter:
    """The filter of the answers to `role`: `keep_paths` for an admin, else
    `file_names_only` of the config's and the interpreter's directories."""
    if role == PATH_ROLE:
        return keep_paths
    return _names_filter(config_path, tuple(sys.path))


@functools.lru_cache(maxsize=8)
def _names_filter(config_path: Path | None, _sys_path: tuple[str, ...]) -> PathFilter:
    """Made once per config path and `sys.path` (a listing asks for it per request)."""
    return file_names_only(known_directories(config_path))


def plugin_row(row: dict[str, Any], paths: PathFilter) -> dict[str, Any]:
    """A plugin row (`PluginRecord.to_json`) with its free texts (`message`, `warnings`)
    passed through `paths`; the same fields."""
    if paths is keep_paths:
        return row
    row["message"] = paths(row["message"])
    row["warnings"] = [paths(w) for w in row["warnings"]]
    return row


def report_for(report: dict[str, Any], paths: PathFilter) -> dict[str, Any]:
    """A generation report (`GenerationResult.report`, or a failure's `{"plugins": ...}`)
    with each hook's `detail` passed through `paths`; the same fields."""
    if paths is keep_paths:
        return report
    for hook in report.get("plugins", ()):
        if isinstance(hook.get("detail"), str):
            hook["detail"] = paths(hook["detail"])
    return report
