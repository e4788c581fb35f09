"""Replace personal data in a plugin's log record by placeholders.

What is replaced, in the format string and in each string argument, case-insensitively:

- every string value of the needs of the generation under way (`[needs]`), and each word
  of three characters or more of such a value (a plugin that logs only a first name, or
  splits a value, is caught too); values and words shorter than four characters only
  where they stand alone (between non-word characters), so a two-letter name does not
  eat every word it occurs in;
- anything that looks like an e-mail address (`[email]`), a phone number (`[phone]`: at
  least nine digits, or a `+` and at least eight, with spaces, dots, dashes or brackets
  between them, not followed by a `:` as a time of day is), or a token or secret
  (`[token]`: a `dihya_` token, a `Bearer` value, or a run of 24 or more letters, digits,
  `_` or `-` holding both letters and digits).

Numbers, booleans and None arguments are kept: the needs' numbers are not personal.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final

NEEDS: Final = "[needs]"
EMAIL: Final = "[email]"
PHONE: Final = "[phone]"
TOKEN: Final = "[token]"

# private-use characters standing in for the placeholders while redaction runs
_STAND_IN: Final = {NEEDS: "\ue010", EMAIL: "\ue011", PHONE: "\ue012", TOKEN: "\ue013"}
_PLACEHOLDER: Final = {v: k for k, v in _STAND_IN.items()}
_PLACEHOLDERS_IN: Final = re.compile("[\ue010-\ue013]")
_EMAIL = re.compile(r"[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_PHONE = re.compile(r"(?<![\w.])(?:\+[\s().-]*\d(?:[\s().-]*\d){7,}"
                    r"|\(?\d(?:[\s().-]*\d){8,})(?![\w:])")  # `:`: a date and time
_TOKEN = re.compile(r"dihya_[A-Za-z0-9_-]+|(?i:bearer)\s+\S+"
                    r"|(?<![A-Za-z0-9_-])(?=[A-Za-z0-9_-]*[A-Za-z])(?=[A-Za-z0-9_-]*\d)"
                    r"[A-Za-z0-9_-]{24,}(?![A-Za-z0-9_-])")
_WORD = re.compile(r"\w{3,}")
SHORT: Final = 4  # values and words shorter than this are matched only as whole words


def needs_strings(value: Any, into: set[str] | None = None) -> set[str]:
    """Every string value (not key) in `value`, a JSON document."""
    found = set() if into is None else into
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if item.strip():
                found.add(item.strip())
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return found


class Redactor:
    """Redacts the given needs strings and the personal-looking patterns."""

    __slots__ = ("_needs",)

    def __init__(self, strings: Iterable[str] = ()) -> None:
        terms = set()
        for text in strings:
            terms.add(text)
            terms.update(_WORD.findall(text))
        ordered = sorted(terms, key=lambda t: (-len(t), t))
        parts = [re.escape(t) if len(t) >= SHORT else rf"(?<!\w){re.escape(t)}(?!\w)"
                 for t in ordered]
        self._needs = re.compile("|".join(parts), re.IGNORECASE) if parts else None

    def text(self, text: str) -> str:
        # the patterns first (a needs word inside another address must not hide it), as
        # one-character stand-ins that no needs term matches, made placeholders last
        text = _PLACEHOLDERS_IN.sub("\ufffd", text)  # a stand-in in the input is no stand-in
        text = _EMAIL.sub(_STAND_IN[EMAIL], text)
        text = _TOKEN.sub(_STAND_IN[TOKEN], text)
        text = _PHONE.sub(_STAND_IN[PHONE], text)
        if self._needs is not None:
            text = self._needs.sub(_STAND_IN[NEEDS], text)
        return _PLACEHOLDERS_IN.sub(lambda m: _PLACEHOLDER[m.group()], text)

    def value(self, value: Any) -> Any:
        return self.text(value) if isinstance(value, str) else value

    def args(self, args: Any) -> Any:
        if isinstance(args, dict):
            return {str(k): self.value(v) for k, v in args.items()}
        if isinstance(args, list):
            return [self.value(v) for v in args]
        return []
