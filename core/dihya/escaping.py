"""Values from outside (a request's path, a file name a plugin chose) written on one line.

`escape_text` writes control characters (C0 with CR and LF, DEL, C1), the Unicode line and
paragraph separators and the bidirectional overrides as `\\xHH`/`\\uHHHH`, so a `%0a` in a
URL cannot start a forged log line and a file name cannot break a message in two. JSON
lines get the same characters as JSON `\\u` escapes (`json.dumps` already escapes C0 but
not DEL, C1 or U+2028).

`redact_tokens` replaces the secret of anything shaped like an API token
(`dihya_<id>_<secret>`) with `[token]`: a client that pastes its token into a URL must not
have it written to the access log.
"""

from __future__ import annotations

import re
from typing import Final

# What a terminal or a log viewer may take for a line break or use to disguise a line:
# C0 (CR, LF, ESC...), DEL, C1 (NEL...), U+2028/2029, bidirectional overrides and isolates.
_UNSAFE: Final = r"\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_UNSAFE_IN_TEXT: Final = re.compile(rf"[{_UNSAFE}\udc80-\udcff\\]")
_UNSAFE_CONTROLS: Final = re.compile(rf"[{_UNSAFE}\udc80-\udcff]")
#: An API token (`dihya.store.tokens`): its id (not secret, it says which token to
#: rotate) is kept, its secret replaced.
_TOKEN_IN_TEXT: Final = re.compile(r"dihya_([0-9a-f]{16})_[A-Za-z0-9_-]{43}")
_UNSAFE_IN_JSON: Final = re.compile(r"[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def redact_tokens(value: str) -> str:
    """`value` with each API token's secret replaced by `[token]`."""
    if "dihya_" not in value:
        return value
    return _TOKEN_IN_TEXT.sub(r"dihya_\1_[token]", value)


def escape_text(value: str, *, backslash: bool = True) -> str:
    """`value` on one line: unsafe characters as `\\xHH` or `\\uHHHH`, and (with
    `backslash`) `\\` as `\\\\`, so an escape in the output cannot be told apart
    from one a client typed. Lone surrogates (bytes that were not UTF-8, decoded with
    `surrogateescape`) come out as the `\\xHH` of the byte."""
    pattern = _UNSAFE_IN_TEXT if backslash else _UNSAFE_CONTROLS
    return pattern.sub(_escape_char, value)


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if char == "\\":
        return "\\\\"
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_json_line(line: str) -> str:
    """A JSON text with the characters `json.dumps` leaves raw (DEL, C1, U+2028...) as
    `\\u` escapes: the same JSON value, always on one line."""
    if line.isascii() and "\x7f" not in line:  # ASCII without DEL: nothing to escape
        return line
    return _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", line)
