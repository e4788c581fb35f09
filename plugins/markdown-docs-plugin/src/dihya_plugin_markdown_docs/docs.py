"""Builders of the generated project's `README.md` and `docs/API.md`.

Paths and names come from `dihya.generator.naming`, so they always match the generated
code. Every heading is a block of its own (one `#` line), so `join_with_toc` builds the
tables of contents from the headings written here without parsing. Text from the needs
goes through `escape_inline`/`escape_block`; everything put in code spans or code blocks
is generated (identifiers, paths, example values), never free text from the needs. The
output is a pure function of the needs: no dates, no randomness.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from dihya import collection_path, snake_case

from dihya_plugin_markdown_docs.markdown import (
    code_span,
    escape_block,
    escape_inline,
    join_with_toc,
)

README_PATH: Final = "README.md"
API_PATH: Final = "docs/API.md"
BASE_URL: Final = "http://127.0.0.1:5000"
DEFAULT_MAX_LENGTH: Final = 255
_HEALTH_BODY: Final = '{"status": "ok"}'
#: Query parameters of every list endpoint: (name, default, rule).
PAGINATION: Final = (("limit", 50, "integer from 1 to 100"), ("offset", 0, "integer >= 0"))

Needs = Mapping[str, Any]
Field = Mapping[str, Any]
Entity = Mapping[str, Any]

_EXAMPLES: Final[dict[str, tuple[Any, Any]]] = {
    # type: (example value, a different value for updates)
    "integer": (1, 2),
    "float": (1.5, 2.5),
    "boolean": (True, False),
    "date": ("2026-01-31", "2026-02-01"),
    "datetime": ("2026-01-31T12:00:00", "2026-02-01T09:30:00"),
}


# --------------------------------------------------------------------------- values


def words(name: str) -> str:
    """`TaskItem` -> `task item`: an identifier as lower-case words."""
    return " ".join(part for part in snake_case(name).split("_") if part)


def example_value(field: Field, *, updated: bool = False) -> Any:
    """An example value of `field` built from its type (and `max_length`)."""
    ftype = field["type"]
    if ftype in ("string", "text"):
        text = f"{'updated' if updated else 'example'} {words(field['name'])}".strip()
        if ftype == "string":
            text = text[: int(field.get("max_length", DEFAULT_MAX_LENGTH))].rstrip() or text[:1]
        return text
    return _EXAMPLES[ftype][1 if updated else 0]


def example_object(entity: Entity, *, updated_field: str | None = None) -> dict[str, Any]:
    """The JSON object the API returns for `entity`, with `id` 1."""
    obj: dict[str, Any] = {"id": 1}
    for field in entity["fields"]:
        obj[field["name"]] = example_value(field, updated=field["name"] == updated_field)
    return obj


def _json_block(value: Any) -> str:
    return "```json\n" + json.dumps(value, indent=2, ensure_ascii=False) + "\n```"


def _compact(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    if "'" in text:  # example values are generated; a quote here would break the shell line
        raise ValueError(f"example body {text!r} cannot be single-quoted")
    return text


def _http_block(status: str, body: Any | None = None, headers: tuple[str, ...] = ()) -> str:
    lines = [f"HTTP/1.1 {status}", *headers]
    if body is not None:
        lines += ["Content-Type: application/json", "", json.dumps(body, indent=2,
                                                                   ensure_ascii=False)]
    return "```http\n" + "\n".join(lines) + "\n```"


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell or " " for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def field_type(field: Field) -> str:
    if field["type"] == "string":
        return f"string (max {int(field.get('max_length', DEFAULT_MAX_LENGTH))})"
    return str(field["type"])


def field_default(field: Field) -> str:
    if "default" not in field:
        return "—"
    return escape_inline(json.dumps(field["default"], ensure_ascii=False))


def title_of(needs: Needs) -> str:
    title = needs.get("title")
    if isinstance(title, str) and title.strip():
        return title
    return str(needs.get("project", "Project"))


# --------------------------------------------------------------------------- README


def build_readme(needs: Needs) -> str:
    """The README of the generated project."""
    slug = str(needs["project"])
    head = [f"# {escape_inline(title_of(needs))}"]
    if needs.get("description"):
        head.append(escape_block(needs["description"]))
    if needs.get("version"):
        head.append(f"Version {code_span(str(needs['version']))}.")
    head.append("## Contents")

    rest = [
        "## Quick start",
        "Create a virtual environment, install the dependencies and run the development "
        "server, then the tests:",
        "```bash\npython3 -m venv .venv\n. .venv/bin/activate\n"
        "pip install -r requirements.txt\nflask --app wsgi run\npytest\n```",
        f"The API then answers on {code_span(BASE_URL)}; {code_span('GET /health')} returns "
        f"{code_span(_HEALTH_BODY)}. The SQLite database is created on startup in "
        f"{code_span(f'instance/{slug}.sqlite3')}.",
        "## Entities",
        "Every entity gets an integer `id`, assigned by the server when it is created.",
    ]
    for entity in needs["entities"]:
        rest.append(f"### {escape_inline(entity['name'])}")
        if entity.get("description"):
            rest.append(escape_block(entity["description"]))
        rest.append(f"Collection: {code_span(collection_path(entity['name']))}.")
        rows = [("`id`", "integer", "no (read-only)", "assigned by the server",
                 "Identifier of the object.")]
        for field in entity["fields"]:
            rows.append((
                code_span(field["name"]),
                field_type(field),
                "yes" if field.get("required") else "no",
                field_default(field),
                escape_inline(field.get("description", "")),
            ))
        rest.append(_table(("Field", "Type", "Required", "Default", "Description"), rows))
    rest += [
        "## API reference",
        f"Every endpoint, with an example request and response, is documented in "
        f"[docs/API.md]({API_PATH}).",
    ]
    return join_with_toc(head, rest) + "\n"


# --------------------------------------------------------------------------- API.md


def build_api(needs: Needs) -> str:
    """The API reference of the generated project."""
    head = [
        f"# {escape_inline(title_of(needs))}: API reference",
        f"The REST API of the project (see the [README](../{README_PATH})). Request and "
        f"response bodies are JSON; the examples use the development server at "
        f"{code_span(BASE_URL)}.",
        "## Contents",
    ]
    rest = [*_conventions(), *_health()]
    for entity in needs["entities"]:
        rest += _entity_section(entity)
    return join_with_toc(head, rest) + "\n"


def _conventions() -> list[str]:
    pagination = ", ".join(f"{code_span(name)} ({rule}, default {default})"
                           for name, default, rule in PAGINATION)
    return [
        "## Conventions",
        "- Send bodies with `Content-Type: application/json`; a body that is not a JSON "
        "object is refused with `400`.\n"
        f"- List endpoints are paginated with the query parameters {pagination}.\n"
        "- `POST` answers `201` with the created object and a `Location` header; `PATCH` "
        "changes only the fields it is given; `DELETE` answers `204` with no body.\n"
        "- On create, a missing required field is an error and a missing optional field "
        "takes its default. Unknown fields are refused (`422`, `unknown field`); `null` is "
        "accepted for fields that are not required.",
        "## Errors",
        "Errors are JSON objects of one of these shapes:",
        _table(("Status", "Body", "When"), [
            ("`400 Bad Request`", code_span('{"error": "..."}'),
             "The body is not a JSON object, or a query parameter is not valid."),
            ("`404 Not Found`", code_span('{"error": "not found"}'),
             "No object has this `id`."),
            ("`422 Unprocessable Entity`", code_span('{"errors": {"<field>": "<message>"}}'),
             "Values do not validate: one message per field."),
        ]),
        "For example:",
        _http_block("400 Bad Request", {"error": "limit must be an integer from 1 to 100"}),
        _http_block("404 Not Found", {"error": "not found"}),
    ]


def _health() -> list[str]:
    return [
        "## Health",
        "### Check health",
        code_span("GET /health"),
        f"```bash\ncurl -s {BASE_URL}/health\n```",
        _http_block("200 OK", {"status": "ok"}),
    ]


def _entity_section(entity: Entity) -> list[str]:
    name = entity["name"]
    path = collection_path(name)
    noun = words(name)
    item = f"{path}/1"
    fields = list(entity["fields"])
    created = example_object(entity)
    body = {k: v for k, v in created.items() if k != "id"}
    first = fields[0]
    patch = {first["name"]: example_value(first, updated=True)}
    updated = example_object(entity, updated_field=first["name"])
    required = [f for f in fields if f.get("required")]
    bad = required[0] if required else first
    invalid = {"errors": {bad["name"]: "is required" if required else f"must be a {bad['type']}"}}
    query = "&".join(f"{n}={d}" for n, d, _ in PAGINATION)
    collection_noun = words(path.rsplit("/", 1)[-1])

    section = [f"## {escape_inline(name)}"]
    if entity.get("description"):
        section.append(escape_block(entity["description"]))
    section.append(_table(("Field", "Type", "Required"), [
        ("`id`", "integer", "read-only"),
        *((code_span(f["name"]), field_type(f), "yes" if f.get("required") else "no")
          for f in fields),
    ]))
    section += [
        f"### List {escape_inline(collection_noun)}",
        code_span(f"GET {path}?{query}"),
        "Query parameters: " + ", ".join(f"{code_span(n)} ({rule}, default {d})"
                                         for n, d, rule in PAGINATION)
        + f". Items come in {code_span('id')} order; {code_span('count')} is the total "
        f"number of {escape_inline(collection_noun)}. An invalid value answers `400`.",
        f"```bash\ncurl -s '{BASE_URL}{path}?{query}'\n```",
        _http_block("200 OK", {"items": [created], "count": 1}),
        f"### Create a {escape_inline(noun)}",
        code_span(f"POST {path}"),
        f"```bash\ncurl -s -i -X POST {BASE_URL}{path} \\\n"
        f"  -H 'Content-Type: application/json' \\\n  -d '{_compact(body)}'\n```",
        _http_block("201 Created", created, (f"Location: {item}",)),
        "A body that is not a JSON object answers `400`; invalid values answer `422` with "
        "one message per field, for example:",
        _http_block("422 Unprocessable Entity", invalid),
        f"### Get a {escape_inline(noun)}",
        code_span(f"GET {path}/<id>"),
        f"```bash\ncurl -s {BASE_URL}{item}\n```",
        _http_block("200 OK", created),
        "An unknown `id` answers `404` with `{\"error\": \"not found\"}`.",
        f"### Update a {escape_inline(noun)}",
        code_span(f"PATCH {path}/<id>"),
        "Only the fields in the body change.",
        f"```bash\ncurl -s -X PATCH {BASE_URL}{item} \\\n"
        f"  -H 'Content-Type: application/json' \\\n  -d '{_compact(patch)}'\n```",
        _http_block("200 OK", updated),
        "Errors: `400` (body not a JSON object), `404` (unknown `id`), `422` (invalid "
        "values).",
        f"### Delete a {escape_inline(noun)}",
        code_span(f"DELETE {path}/<id>"),
        f"```bash\ncurl -s -i -X DELETE {BASE_URL}{item}\n```",
        _http_block("204 No Content"),
        "An unknown `id` answers `404`.",
    ]
    return section
