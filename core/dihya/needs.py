"""Validation of needs (the input) and of code mappings (the output), with JSON paths.

The needs JSON Schema in `schemas/needs.schema.json` is the single source of truth; the
checks a schema cannot express (unique names, reserved words, typed defaults) live here.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import json
import keyword
import re
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from typing import Any, Final

import attrs

from dihya.reasons import DihyaError, FixedReasonError

MAX_NEEDS_BYTES: Final = 1024 * 1024
MAX_FILES: Final = 500
MAX_FILE_BYTES: Final = 1024 * 1024
#: Longest file or directory name, in UTF-8 bytes (NAME_MAX of ext4, XFS, Btrfs, tmpfs, APFS).
MAX_SEGMENT_BYTES: Final = 255
RESERVED_FIELD_NAMES: Final = frozenset({"id"})
#: Deepest nesting of arrays and objects a JSON document may have (needs nest 4 levels).
MAX_JSON_DEPTH: Final = 64
#: Most problems one validation lists: the rest are counted in one closing problem.
MAX_PROBLEMS: Final = 50
_SAFE_SEGMENT = re.compile(r"^[^\x00-\x1f\\:*?\"<>|]+$")


@attrs.frozen
class Problem:
    """One thing wrong with a document, located by a JSON path such as `$.entities[0]`."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class JsonDepthError(FixedReasonError, ValueError):
    """A JSON document nested deeper than `MAX_JSON_DEPTH`."""

    REASON = "json-too-deep"


def load_json(text: str | bytes) -> Any:
    """`json.loads`, refusing documents nested deeper than MAX_JSON_DEPTH (JsonDepthError,
    also for those too deep for the parser itself) so that nothing downstream recurses
    without bound; json.JSONDecodeError as usual for malformed text, and ValueError for
    `NaN`, `Infinity` and `-Infinity`, which Python's parser takes but JSON (RFC 8259)
    does not have and the canonical JSON cannot hash."""
    try:
        value = json.loads(text, parse_constant=_not_json)
    except RecursionError as exc:
        raise JsonDepthError(f"arrays and objects are nested deeper than the limit of "
                             f"{MAX_JSON_DEPTH}") from exc
    # every array and object of the value opened with its own `[` or `{` of the text: with
    # no more of them than the limit, no walk can find it nested deeper (the usual body)
    if _openers(text) > MAX_JSON_DEPTH and nesting_depth(value, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise JsonDepthError(f"arrays and objects are nested deeper than the limit of "
                             f"{MAX_JSON_DEPTH}")
    return value


def _openers(text: str | bytes) -> int:
    """How many `[` and `{` `text` holds (in strings too): an upper bound on how deeply
    arrays and objects nest in the value it parses to."""
    if isinstance(text, str):
        return text.count("[") + text.count("{")
    return text.count(b"[") + text.count(b"{")


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def nesting_depth(value: Any, stop: int) -> int:
    """How deeply arrays and objects nest in `value` (a scalar is 0), counting no further
    than `stop + 1`: the walk never goes deeper than that, so any depth is safe to measure
    (`stop` must stay far below the recursion limit; MAX_JSON_DEPTH is 64)."""
    if not isinstance(value, dict | list):
        return 0
    return _depth(value, 1, stop)


def _depth(item: dict[Any, Any] | list[Any], depth: int, stop: int) -> int:
    if depth > stop:
        return depth
    deepest = depth
    for child in item.values() if isinstance(item, dict) else item:
        if isinstance(child, dict | list):
            found = _depth(child, depth + 1, stop)
            if found > deepest:
                if found > stop:
                    return found
                deepest = found
    return deepest


#: The reason of a `NeedsError`.
INVALID_NEEDS: Final = "invalid-needs"


class NeedsError(DihyaError, ValueError):
    """Needs that do not validate; `problems` lists every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__(INVALID_NEEDS, "invalid needs: " + "; ".join(map(str, problems)))


@functools.cache
def needs_schema() -> dict[str, Any]:
    """The needs JSON Schema shipped in the package."""
    text = resources.files("dihya").joinpath("schemas/needs.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@functools.cache
def _validator() -> Any:
    import jsonschema

    return jsonschema.Draft202012Validator(needs_schema())


@functools.cache
def _fast_validator() -> Callable[[Any], Any]:
    import fastjsonschema

    # a deep copy: fastjsonschema rewrites the `$ref`s of the schema it is given in place
    schema = {k: copy.deepcopy(v) for k, v in needs_schema().items() if k != "$schema"}
    validate: Callable[[Any], Any] = fastjsonschema.compile(schema)
    return validate


def prepare_validators() -> None:
    """Build both needs validators now (the compiled check and jsonschema's), as `dihya
    serve`'s arbiter does before it forks its workers, rather than at the first request."""
    _fast_validator()
    _validator()


def _passes_fast_check(needs: object) -> bool:
    """The schema check compiled to Python (about 30x faster than jsonschema).

    Only a yes/no: when it says no, jsonschema, the reference, finds and words every
    problem. A test keeps both in agreement.
    """
    import fastjsonschema

    try:
        _fast_validator()(needs)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


def json_path(parts: Iterable[object]) -> str:
    out = "$"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def validate_needs(needs: object) -> list[Problem]:
    """The problems with `needs` (at most MAX_PROBLEMS, then one that says more were not
    listed), or an empty list when they are valid. Bounded work whatever the input: the
    schema's errors are drawn lazily and no more than needed are worded."""
    return _needs_problems(needs, depth_checked=False)


def _needs_problems(needs: object, depth_checked: bool) -> list[Problem]:
    """`validate_needs`; `depth_checked`: the caller took `needs` from a document
    `load_json` parsed, which refused any nesting deeper than MAX_JSON_DEPTH, so the depth
    is not walked a second time."""
    try:
        size = len(json.dumps(needs, ensure_ascii=False).encode("utf-8"))
    except (TypeError, ValueError) as exc:
        return [Problem("$", f"not JSON data: {exc}")]
    if size > MAX_NEEDS_BYTES:
        return [Problem("$", f"needs are {size} bytes, the limit is {MAX_NEEDS_BYTES}")]
    if not depth_checked and nesting_depth(needs, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        return [Problem("$", f"arrays and objects are nested deeper than the limit of "
                             f"{MAX_JSON_DEPTH}")]
    if _passes_fast_check(needs):
        return _at_most(_semantic_problems(needs))  # type: ignore[arg-type]
    errors, more = first_errors(_validator().iter_errors(needs), MAX_PROBLEMS)
    problems = [Problem(json_path(e.absolute_path), _schema_message(e)) for e in errors]
    if more:
        problems.append(more_problems())
    if not problems:
        problems = _at_most(_semantic_problems(needs))  # type: ignore[arg-type]
    return problems


def _at_most(problems: list[Problem]) -> list[Problem]:
    if len(problems) <= MAX_PROBLEMS:
        return problems
    return [*problems[:MAX_PROBLEMS], more_problems()]


def first_errors(errors: Iterable[Any], limit: int) -> tuple[list[Any], bool]:
    """The first `limit` schema errors in document order, and whether there were more:
    at most `limit + 1` are drawn from the (lazy) iterator."""
    taken: list[Any] = []
    for error in errors:
        if len(taken) == limit:
            return sorted(taken, key=lambda e: list(map(str, e.absolute_path))), True
        taken.append(error)
    return sorted(taken, key=lambda e: list(map(str, e.absolute_path))), False


def more_problems() -> Problem:
    return Problem("$", f"more problems were found: only the first {MAX_PROBLEMS} are listed; "
                        "fix these and validate again")


def check_needs(needs: object) -> dict[str, Any]:
    """Return `needs` if valid, else raise `NeedsError` listing every problem."""
    return _checked(needs, depth_checked=False)


def check_loaded_needs(needs: object) -> dict[str, Any]:
    """`check_needs` of needs taken from a document `load_json` parsed (which refused any
    nesting deeper than MAX_JSON_DEPTH): the same checks but the depth walk, done once."""
    return _checked(needs, depth_checked=True)


def _checked(needs: object, depth_checked: bool) -> dict[str, Any]:
    problems = _needs_problems(needs, depth_checked)
    if problems:
        raise NeedsError(problems)
    assert isinstance(needs, dict)
    return needs


def _schema_message(error: Any) -> str:
    """A message that says what is expected without echoing the value (it may be personal)."""
    kind, want = error.validator, error.validator_value
    last = error.path[-1] if error.path else None
    if kind == "pattern" and last == "project":
        return ("is not a valid project slug: use lower-case letters, digits and dashes, "
                "starting with a letter, at most 63 characters")
    if kind == "pattern" and last == "name":
        return ("is not an identifier: use letters, digits and `_`, not starting with a "
                "digit, at most 64 characters")
    if kind == "additionalProperties":
        allowed = set(error.schema.get("properties", {}))
        extra = sorted(k for k in error.instance if k not in allowed and not k.startswith("x-"))
        advice = (", or prefix extension keys with `x-`"
                  if "patternProperties" in error.schema else "")
        return f"unexpected key(s) {', '.join(map(repr, extra))} (remove them{advice})"
    templates = {
        "type": lambda: f"must be of type {' or '.join(_list(want))}",
        "enum": lambda: f"must be one of: {', '.join(map(str, want))}",
        "required": lambda: error.message,
        "minItems": lambda: f"must have at least {want} item(s)",
        "maxItems": lambda: f"must have at most {want} items",
        "maxLength": lambda: f"must be at most {want} characters",
        "minimum": lambda: f"must be at least {want}",
        "maximum": lambda: f"must be at most {want}",
        "pattern": lambda: f"must match the pattern {want}",
    }
    make: Callable[[], object] | None = templates.get(kind)
    return str(make()) if make else f"fails the `{kind}` rule of the needs schema"


def _list(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _semantic_problems(needs: Mapping[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    from dihya.generator.naming import collection_name

    seen_entities: dict[str, int] = {}
    seen_tables: dict[str, str] = {}
    for i, entity in enumerate(needs["entities"]):
        name = entity["name"]
        path = ("entities", i, "name")
        problems += _identifier_problems(name, path)
        key = name.lower()
        if key in seen_entities:
            problems.append(Problem(json_path(path), f"entity {name!r} is declared twice "
                                    f"(also at $.entities[{seen_entities[key]}]); names are "
                                    "compared without case"))
        seen_entities.setdefault(key, i)
        table = collection_name(name)
        if table in seen_tables and seen_tables[table] != key:
            problems.append(Problem(json_path(path), f"entity {name!r} maps to the same table "
                                    f"and URL (`{table}`) as another entity; rename one"))
        seen_tables.setdefault(table, key)
        seen_fields: set[str] = set()
        for j, field in enumerate(entity["fields"]):
            fpath = ("entities", i, "fields", j)
            fname = field["name"]
            problems += _identifier_problems(fname, (*fpath, "name"))
            if fname.lower() in RESERVED_FIELD_NAMES:
                problems.append(Problem(json_path((*fpath, "name")), f"{fname!r} is reserved: "
                                        "every entity gets an integer `id` automatically"))
            if fname.lower() in seen_fields:
                problems.append(Problem(json_path((*fpath, "name")),
                                        f"field {fname!r} is declared twice in {name!r}"))
            seen_fields.add(fname.lower())
            problems += _field_problems(field, fpath)
    return problems


def _identifier_problems(name: str, path: tuple[object, ...]) -> list[Problem]:
    if keyword.iskeyword(name) or keyword.issoftkeyword(name) or name.startswith("__"):
        return [Problem(json_path(path), f"{name!r} is a reserved word in generated code; "
                        "choose another name")]
    return []


def _field_problems(field: Mapping[str, Any], path: tuple[object, ...]) -> list[Problem]:
    ftype = field["type"]
    problems = []
    if "max_length" in field and ftype != "string":
        problems.append(Problem(json_path((*path, "max_length")),
                                f"`max_length` applies to string fields only, not {ftype}"))
    if "default" in field and field["default"] is not None:
        reason = default_problem(ftype, field["default"], field.get("max_length", 255))
        if reason:
            problems.append(Problem(json_path((*path, "default")), reason))
    return problems


def default_problem(ftype: str, value: object, max_length: int = 255) -> str | None:
    """Why `value` cannot be a value of a field of type `ftype`, or None if it can."""
    ok: bool
    if ftype in ("string", "text"):
        ok = isinstance(value, str) and (ftype == "text" or len(value) <= max_length)
    elif ftype == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool) and -2**63 <= value < 2**63
    elif ftype == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif ftype == "boolean":
        ok = isinstance(value, bool)
    elif ftype == "date":
        ok = isinstance(value, str) and _parses(dt.date.fromisoformat, value)
    else:
        ok = isinstance(value, str) and _parses(dt.datetime.fromisoformat, value)
    if ok:
        return None
    hint = {"date": " (ISO 8601, e.g. 2026-01-31)", "datetime": " (ISO 8601, e.g. "
            "2026-01-31T12:00:00)", "string": f" of at most {max_length} characters",
            "integer": " (a whole number that fits in 64 bits)"}
    return f"default is not a valid {ftype}{hint.get(ftype, '')}"


def _parses(parse: Any, value: str) -> bool:
    try:
        parse(value)
    except ValueError:
        return False
    return True


def validate_code(code: object) -> list[Problem]:
    """Every problem with a code mapping (relative POSIX path -> text).

    A mapping that passes can be written: every path is safe and encodable, no path goes
    through another file of the mapping, every content is UTF-8-encodable text in bounds.
    """
    if not isinstance(code, dict):
        return [Problem("$", f"code must be an object mapping paths to text, "
                        f"not {type(code).__name__}")]
    if len(code) > MAX_FILES:
        return [Problem("$", f"{len(code)} files, the limit is {MAX_FILES}")]
    problems: list[Problem] = []
    for path, text in code.items():
        _entry_problems(path, text, code, problems)
    return problems


def _entry_problems(path: object, text: object, code: dict[Any, Any],
                    problems: list[Problem]) -> None:
    """Append to `problems` what is wrong with one entry of `code`: its path (unsafe, or
    through another file of `code`) and its text."""
    reason = unsafe_path_reason(path) or _through_file_reason(path, code)
    if reason:
        problems.append(Problem(_where(path), reason))
    reason = _content_reason(text)
    if reason:
        problems.append(Problem(_where(path), reason))


def _where(path: object) -> str:
    """Where a problem of `code`'s entry `path` is (made only for a problem)."""
    return f"$[{json.dumps(path) if isinstance(path, str) else repr(path)}]"


def validate_code_from(code: object, base: Mapping[str, str]) -> list[Problem]:
    """`validate_code(code)`, for `code` made from `base`, a mapping that passed
    `validate_code`: an entry of `code` that is one of `base`'s (a `str` key of `base`
    holding the very same text object) is not checked again, as its path and text passed
    then. What can make such an entry invalid beside the others, a key `base` did not
    have that is one of its parent directories, is checked for every entry when `code`
    added a key. The number of files is checked as in `validate_code`."""
    if not isinstance(code, dict) or len(code) > MAX_FILES:
        return validate_code(code)
    problems: list[Problem] = []
    added = False
    for path, text in code.items():
        if type(path) is str and base.get(path, _ABSENT) is text:
            continue
        added = added or path not in base
        _entry_problems(path, text, code, problems)
    if added:
        for path, text in code.items():
            if type(path) is str and base.get(path, _ABSENT) is text:
                reason = _through_file_reason(path, code)
                if reason:
                    problems.append(Problem(f"$[{json.dumps(path)}]", reason))
    return problems


_ABSENT: Final[Any] = object()


def _content_reason(text: object) -> str | None:
    if not isinstance(text, str):
        return f"content must be text, not {type(text).__name__}"
    if len(text) > MAX_FILE_BYTES:
        return f"content is larger than {MAX_FILE_BYTES} bytes"
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        return f"content {_not_unicode(exc)}"
    if size > MAX_FILE_BYTES:
        return f"content is larger than {MAX_FILE_BYTES} bytes"
    return None


def _not_unicode(exc: UnicodeEncodeError) -> str:
    char = exc.object[exc.start]
    return (f"is not valid Unicode text: a lone surrogate U+{ord(char):04X} at character "
            f"{exc.start} cannot be written as UTF-8")


def _through_file_reason(path: object, code: dict[Any, Any]) -> str | None:
    """Why `path` cannot be written beside the other files of `code`: a parent directory of
    it is itself a file of the mapping (`README.md` and `README.md/child.txt`)."""
    assert isinstance(path, str)  # unsafe_path_reason said so
    cut = path.find("/")
    while cut != -1:
        if path[:cut] in code:
            return (f"goes through {path[:cut]!r}, which is a file of this output: a path "
                    "cannot be both a file and a directory")
        cut = path.find("/", cut + 1)
    return None


def unsafe_path_reason(path: object) -> str | None:
    """Why `path` is not a safe relative POSIX path inside the output, or None."""
    if not isinstance(path, str) or not path:
        return "a path must be a non-empty string"
    try:
        path.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"the path {_not_unicode(exc)}"
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        return "absolute paths are not allowed"
    if "\\" in path:
        return "use `/` as the separator, not `\\`"
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            return "empty, `.` and `..` path segments are not allowed"
        if not _SAFE_SEGMENT.match(segment):
            return f"segment {segment!r} has a control or reserved character"
        size = len(segment.encode("utf-8"))
        if size > MAX_SEGMENT_BYTES:
            return (f"a file or directory name of {size} bytes (UTF-8); the limit is "
                    f"{MAX_SEGMENT_BYTES}")
    if len(path) > 512:
        return "path is longer than 512 characters"
    return None
