"""The `flask-api` stack: a Flask REST project with SQLite storage, one blueprint per entity.

Everything taken from the needs is turned into names by `dihya.generator.naming` and into
source text by the filters below, so that user text can only ever land in docstrings,
comments or escaped literals, never become code.
"""

from __future__ import annotations

import datetime as dt
import functools
import keyword
import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs
from jinja2 import Environment, PackageLoader, StrictUndefined

from dihya.generator import naming

STACK: Final = "flask-api"
_TEMPLATES: Final = "flask_api"
_SQL_TYPES: Final = {"string": "TEXT", "text": "TEXT", "date": "TEXT", "datetime": "TEXT",
                     "integer": "INTEGER", "boolean": "INTEGER", "float": "REAL"}
_Pairs = tuple[tuple[str, str], ...]
_INT_RANGE: Final = (-(2**63), 2**63 - 1)
#: Output path -> template, for files that are not per entity.
_PROJECT_FILES: Final = {
    ".gitignore": "gitignore.j2",
    "README.md": "README.md.j2",
    "requirements.txt": "requirements.txt.j2",
    "pytest.ini": "pytest.ini.j2",
    "wsgi.py": "wsgi.py.j2",
    "app/__init__.py": "app/__init__.py.j2",
    "app/db.py": "app/db.py.j2",
    "app/schema.sql": "app/schema.sql.j2",
    "app/validation.py": "app/validation.py.j2",
    "app/models/__init__.py": "app/models/__init__.py.j2",
    "app/api/__init__.py": "app/api/__init__.py.j2",
    "tests/conftest.py": "tests/conftest.py.j2",
    # `test_0_...`: no entity's module name can start with a digit, so no clash.
    "tests/test_0_app.py": "tests/test_0_app.py.j2",
}
_ENTITY_FILES: Final = {
    naming.model_module_path: "app/models/entity.py.j2",
    naming.api_module_path: "app/api/entity.py.j2",
    naming.test_module_path: "tests/test_entity.py.j2",
}


@attrs.frozen
class Field:
    """One field, with the Python sources the templates put into the project."""

    name: str
    type: str
    required: bool
    sql_type: str
    spec_args: tuple[str, ...]
    comment: str
    default: str
    valid: str
    other: str
    invalid: _Pairs
    accepted: _Pairs


@attrs.frozen
class Entity:
    """One entity and every name derived from it."""

    name: str
    module: str
    collection: str
    path: str
    description: str
    keyword_module: bool
    fields: tuple[Field, ...]


def one_line(text: object) -> str:
    """`text` on one line: every control or separator character becomes a space."""
    chars = (ch if ch.isprintable() else " " for ch in str(text))
    return " ".join("".join(chars).split())


def docstring_text(text: object, indent: int = 0, width: int = 88) -> str:
    """`text` as lines that are safe inside a `\"\"\"` docstring, wrapped at `width`."""
    lines = textwrap.wrap(one_line(text), width - indent, break_long_words=False,
                          break_on_hyphens=False) or [""]
    escaped = (line.replace("\\", "\\\\").replace('"', '\\"') for line in lines)
    return ("\n" + " " * indent).join(escaped)


def comment(text: object, indent: int = 0, prefix: str = "# ") -> str:
    """`text` as comment lines starting with `prefix`, wrapped at 88 characters."""
    lines = textwrap.wrap(one_line(text), 88 - indent - len(prefix), break_long_words=False,
                          break_on_hyphens=False) or [""]
    return ("\n" + " " * indent).join(prefix + line for line in lines)


def call_source(func: str, args: Sequence[str], indent: int = 4, prefix: str = "") -> str:
    """`func(args),` indented, split over lines the way ruff format does when too long."""
    pad = " " * indent
    line = f"{pad}{prefix}{func}({', '.join(args)}),"
    if len(line) <= 100:
        return line
    inner = f"{pad}    {', '.join(args)}"
    if len(inner) <= 100:
        return f"{pad}{prefix}{func}(\n{inner}\n{pad}),"
    return f"{pad}{prefix}{func}(\n" + "".join(f"{pad}    {a},\n" for a in args) + f"{pad}),"


def py_literal(value: object) -> str:
    """A Python literal of a JSON scalar (repr-based, so always valid source)."""
    if isinstance(value, str):
        text = repr(value)
        return f'"{text[1:-1]}"' if text[0] == "'" and '"' not in value else text
    if value is None or isinstance(value, bool | int):
        return repr(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    raise ValueError(f"{value!r} cannot be a value in generated code")


@functools.cache
def environment() -> Environment:
    """The Jinja2 environment of the core templates, created once."""
    env = Environment(loader=PackageLoader("dihya", "generator/templates"), autoescape=False,
                      keep_trailing_newline=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True,
                      auto_reload=False)  # templates ship in the package: no stat per render
    env.filters.update(docstring=docstring_text, comment=comment, one_line=one_line,
                       py=py_literal, call=call_source)
    return env


def compile_templates() -> None:
    """Compile every core template now (Jinja2 keeps them), as `dihya serve`'s arbiter
    does before it forks its workers, rather than at a worker's first generation."""
    env = environment()
    for name in env.list_templates():
        env.get_template(name)


def generate(needs: Mapping[str, Any]) -> dict[str, str]:
    """The files of a Flask REST project for `needs` (already checked): path -> text."""
    entities = tuple(_entity(e) for e in needs["entities"])
    _check_clashes(entities)
    context = {
        "slug": needs["project"],
        "title": one_line(needs.get("title", "")) or needs["project"],
        "description": str(needs.get("description", "")).strip(),
        "version": needs.get("version", "0.1.0"),
        "entities": entities,
    }
    env = environment()
    code = {path: env.get_template(f"{_TEMPLATES}/{name}").render(context)
            for path, name in _PROJECT_FILES.items()}
    for entity, raw in zip(entities, needs["entities"], strict=True):
        for path_of, name in _ENTITY_FILES.items():
            template = env.get_template(f"{_TEMPLATES}/{name}")
            code[path_of(raw["name"])] = template.render(context, entity=entity)
    return dict(sorted(code.items()))


def _check_clashes(entities: tuple[Entity, ...]) -> None:
    for attr in ("module", "collection"):
        seen: dict[str, str] = {}
        for entity in entities:
            key = getattr(entity, attr)
            if key in seen:
                raise ValueError(f"entities {seen[key]!r} and {entity.name!r} would share the "
                                 f"{attr} name {key!r}; rename one of them")
            seen[key] = entity.name


def _entity(raw: Mapping[str, Any]) -> Entity:
    module = naming.module_name(raw["name"])
    return Entity(
        name=raw["name"], module=module, collection=naming.collection_name(raw["name"]),
        path=naming.collection_path(raw["name"]), description=raw.get("description", ""),
        keyword_module=keyword.iskeyword(module),
        fields=tuple(_field(raw["name"], f) for f in raw["fields"]),
    )


def _field(entity: str, raw: Mapping[str, Any]) -> Field:
    name, ftype = raw["name"], raw["type"]
    required = bool(raw.get("required", False))
    max_length = int(raw.get("max_length", 255))
    default = _canonical(entity, name, ftype, raw.get("default"))
    args = [py_literal(ftype)]
    if required:
        args.append("required=True")
    if default is not None:
        args.append(f"default={py_literal(default)}")
    if ftype == "string" and max_length != 255:
        args.append(f"max_length={max_length}")
    valid, other, invalid, accepted = _samples(name, ftype, max_length)
    return Field(name=name, type=ftype, required=required, sql_type=_SQL_TYPES[ftype],
                 spec_args=tuple(args), comment=one_line(raw.get("description", "")),
                 default=py_literal(default), valid=valid, other=other, invalid=invalid,
                 accepted=accepted)


def _canonical(entity: str, name: str, ftype: str, value: Any) -> Any:
    """The default as the generated project stores it (dates normalised, floats as float)."""
    stored = value
    try:
        if value is not None and ftype == "float":
            stored = float(value)
        elif value is not None and ftype == "date":
            stored = dt.date.fromisoformat(value).isoformat()
        elif value is not None and ftype == "datetime":
            stored = dt.datetime.fromisoformat(value).isoformat()
    except (OverflowError, TypeError, ValueError):
        stored = math.nan
    if ftype == "integer" and value is not None and not _INT_RANGE[0] <= value <= _INT_RANGE[1]:
        stored = math.nan
    if isinstance(stored, float) and not math.isfinite(stored):
        raise ValueError(f"default of {entity}.{name} ({value!r}) cannot be stored as {ftype}")
    return stored


def _samples(name: str, ftype: str, max_length: int) -> tuple[str, str, _Pairs, _Pairs]:
    """Sources of a valid value, another one, invalid (value, id) and accepted (value, stored)."""
    if ftype == "string":
        valid, other = f"Sample {name}"[:max_length], f"Other {name}"[:max_length]
        invalid: _Pairs = (("123", "number"), (f'"x" * {max_length + 1}', "too-long"))
        longest = f'"x" * {max_length}'
        extra: _Pairs = ((longest, longest),)
    else:
        valid, other, invalid, accepted = _SAMPLES[ftype]
        extra = tuple((py_literal(a), py_literal(b)) for a, b in accepted)
    pairs = tuple((py_literal(v), py_literal(v)) for v in (valid, other))
    return py_literal(valid), py_literal(other), invalid, pairs + extra


#: Per type (string aside): valid value, other valid value, invalid (source, id) pairs and
#: accepted (value, stored value) pairs, exercised by the generated tests.
_SAMPLES: Final[dict[str, tuple[Any, Any, _Pairs, tuple[tuple[Any, Any], ...]]]] = {
    "text": ("Some text,\non two lines.", "Other text.",
             (("123", "number"), ('["a"]', "list")), (("", ""),)),
    "integer": (7, -3, (('"7"', "string"), ("True", "boolean"), ("1.5", "float"),
                        ("2**63", "too-large")), ((0, 0),)),
    "float": (2.5, -0.75, (('"2.5"', "string"), ("True", "boolean")), ((3, 3.0),)),
    "boolean": (True, False, (('"true"', "string"), ("1", "number")), ()),
    "date": ("2026-01-31", "2024-02-29", (('"31/01/2026"', "format"),
                                          ('"2026-02-30"', "no-such-day"),
                                          ("20260131", "number")), ()),
    "datetime": ("2026-01-31T12:30:00", "2026-02-28T08:15:00+01:00",
                 (('"yesterday"', "format"), ('"2026-01-31T25:00:00"', "no-such-hour"),
                  ("5", "number")),
                 (("2026-01-31T12:30:00Z", "2026-01-31T12:30:00+00:00"),)),
}
