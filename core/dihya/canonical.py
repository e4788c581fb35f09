"""The one canonical JSON of the core: the text that is hashed wherever a hash of data is
recorded (the audit chain, `needs_sha256` and `code_sha256` in reports and audit events),
so an auditor can match a report with its audit event.

Sorted keys, no spaces, UTF-8 (non-ASCII characters as themselves), no NaN or infinity:
exactly `json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
allow_nan=False)`. That definition never changes (stored audit chains are hashes of it).

How it is computed: data made only of what msgspec writes byte for byte as `json.dumps`
does — dicts with `str` keys, lists, tuples, `str`, `bool`, `None`, `int` within 64 bits
and finite floats whose `repr` has no exponent — is encoded by msgspec (one C pass, 5-10×
faster); anything else (an exponent, NaN, a big int, a subclass with its own `items`, an
unknown type, circular data, a lone surrogate) by the standard library, so its result and
its errors are the standard library's. `tests/unit/test_canonical.py` holds the proof:
both encoders over every code point, key orders, floats, and golden hashes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final

# the standard library's encoder with the canonical settings, built once (`json.dumps`
# builds one per call); stateless between calls, so shared by threads
_JSON: Final = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                                allow_nan=False)
# msgspec's encoder, made at the first encoding (a command that encodes nothing, such as
# `dihya plugins list`, does not import msgspec), and the errors it may raise then
_FAST: Any = None
_PLAIN: Any = None  # the same in the data's own key order, for `indented_json`
_ERRORS: tuple[type[BaseException], ...] = (RecursionError, ValueError, TypeError)
_INT_MAX: Final = 2**63
_DICT_ITEMS: Final = dict.items
_DICT_VALUES: Final = dict.values
_STR_ONLY: Final = frozenset({str})


def _fast_ok(value: Any) -> bool:
    """True when msgspec writes `value` exactly as the standard library does (see the
    module docstring); circular or too deep data raises `RecursionError`."""
    kind = type(value)
    if kind is dict or (isinstance(value, dict) and kind.items is _DICT_ITEMS):
        return set(map(type, value)) <= _STR_ONLY and _items_ok(_DICT_VALUES(value))
    if kind is list or kind is tuple or isinstance(value, list):
        # `json` and msgspec both read a list subclass's own storage
        return _items_ok(value)
    if isinstance(value, dict | tuple):  # a dict with its own `items`, a named tuple
        return False
    return _items_ok((value,))


def _items_ok(items: Any) -> bool:
    """`_fast_ok` of every member of `items` (scalars checked here, without a call)."""
    for item in items:
        kind = type(item)
        if kind is str or item is None or kind is bool:
            continue
        if kind is int:
            if not -_INT_MAX <= item < _INT_MAX:
                return False
        elif kind is float:
            text = float.__repr__(item)  # what `json` writes: no exponent, NaN or infinity
            if "e" in text or "n" in text:
                return False
        elif not (kind is dict or kind is list or kind is tuple
                  or isinstance(item, dict | list | tuple)) or not _fast_ok(item):
            return False
    return True


def _encoder() -> Any:
    """msgspec's sorted-keys JSON encoder (made once; stateless, shared by threads)."""
    global _FAST, _PLAIN, _ERRORS
    if _FAST is None:
        import msgspec

        _ERRORS = (RecursionError, ValueError, TypeError, msgspec.EncodeError)
        _PLAIN = msgspec.json.Encoder()
        _FAST = msgspec.json.Encoder(order="sorted")
    return _FAST


def _fast(value: Any) -> bytes | None:
    """msgspec's encoding of `value` when it is the canonical one, else None."""
    try:
        if _fast_ok(value):
            data: bytes = (_FAST or _encoder()).encode(value)
            return data
    except _ERRORS:
        pass  # circular or too deep, a lone surrogate...: the standard library's answer
    return None


def canonical_text(value: Any) -> str:
    """The canonical JSON text of `value`."""
    data = _fast(value)
    if data is not None:
        return data.decode("utf-8")
    return _JSON.encode(value)


def canonical_bytes(value: Any) -> bytes:
    """`canonical_text(value)` in UTF-8: what is hashed and what its size is counted in."""
    data = _fast(value)
    if data is not None:
        return data
    return _JSON.encode(value).encode("utf-8")


def sorted_json(value: Any, ensure_ascii: bool = True) -> str:
    """`json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=...)`
    (NaN and infinities allowed, as there), by msgspec when that is the same text: the
    audit event's log line and the server's JSON log lines."""
    data = _fast(value)
    # ASCII and no DEL: what `ensure_ascii` would have escaped is absent
    if data is not None and (not ensure_ascii or (data.isascii() and b"\x7f" not in data)):
        return data.decode("utf-8")
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=ensure_ascii)


def canonical_sha256(value: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of `value`."""
    return hashlib.sha256(canonical_bytes(value)).hexdigest()


def indented_json(value: Any) -> str:
    """`json.dumps(value, indent=2, ensure_ascii=False)` (keys in the data's order), by
    msgspec when that is the same text (the data `_fast_ok` accepts): the standard
    library's encoder is pure Python when it indents, ~30x slower on the `dihya plugins
    list --json` of 1,000 plugins."""
    try:
        if _fast_ok(value):
            if _PLAIN is None:
                _encoder()
            import msgspec

            data: bytes = msgspec.json.format(_PLAIN.encode(value), indent=2)
            return data.decode("utf-8")
    except _ERRORS:
        pass  # circular or too deep, a lone surrogate...: the standard library's answer
    return json.dumps(value, indent=2, ensure_ascii=False)
