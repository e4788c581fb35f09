"""The OpenAPI 3.1 document of the HTTP API, served at `/openapi.json`.

Built from the code's single sources of truth wherever one exists: the needs schema
(`dihya.needs.needs_schema`), the plugin statuses and reasons (`dihya.gate.STATUSES`),
the modes and roles (`dihya.config`), the hooks (`dihya.plugin.HOOK_SPECS`), the hook
result statuses (`dihya.pipeline`), the body schemas and size limits (`dihya.web.api`,
`dihya.web.audit_api`, `dihya.needs`), the audit event's fields (`dihya.audit.AuditEvent`)
the problem type prefix (`dihya.web.problems`), and each operation's id and role
(the view's name and its `@require`). `tests/web` checks
that it lists exactly the app's routes and `tox -e api-fuzz` that a real server keeps it.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Callable
from typing import Any, Final

import attrs
from flask import Blueprint, Response, jsonify

openapi = Blueprint("openapi", __name__)

Schema = dict[str, Any]

#: Valid needs, shown as the example of `POST /api/v1/generate`.
NEEDS_EXAMPLE: Final = {
    "project": "shop", "title": "Shop", "stack": "flask-api",
    "entities": [{"name": "Item", "fields": [
        {"name": "label", "type": "string", "required": True, "max_length": 80},
        {"name": "price", "type": "float", "default": 0},
    ]}],
}

_REF = "#/components/schemas/"
_RESP = "#/components/responses/"
# the free texts that may name a server file (`dihya.web.serverpaths`)
_NAMES_ONLY = ("A server file it names is shown with its full path to an `admin` token only; "
               "other roles get its name (`dihya.toml`, `evil.pth`), or its path inside the "
               "config's or a site directory.")
_PROBLEM_MEDIA: Final = "application/problem+json"

# status -> (component name, description, headers)
_ERRORS: Final[dict[int, tuple[str, str, tuple[str, ...]]]] = {
    400: ("BadRequest", "The body is not valid JSON.", ()),
    401: ("Unauthorized", "No bearer token, or an unknown or revoked one.",
          ("WWW-Authenticate",)),
    403: ("Forbidden", "The token's role (or the plugin's allowlist entry, or for an audit "
          "purge the HTTP purge floor) does not allow this.", ()),
    404: ("NotFound", "No installed plugin (or action) has this name.", ()),
    405: ("MethodNotAllowed", "The method is not allowed on this resource; the Allow header "
          "lists those that are.", ("Allow",)),
    409: ("Conflict", "The plugin's state does not allow this.", ()),
    413: ("PayloadTooLarge", "The request body is larger than {limit} bytes.", ()),
    415: ("UnsupportedMediaType", "The body is not sent as `application/json`.", ()),
    422: ("UnprocessableContent", "The body breaks its schema; `errors` lists every problem "
          "with its JSON pointer.", ()),
    429: ("TooManyRequests", "Rate limit ({rate} per token by default) exceeded; retry after "
          "Retry-After seconds.", ("Retry-After",)),
    500: ("InternalServerError", "The server failed; `request_id` identifies the failure in "
          "its log.", ()),
    502: ("BadGateway", "A plugin (or the generation) failed.", ()),
    503: ("ServiceUnavailable", "The state store is unavailable (read-only, disk full, "
          "deleted, unreachable...), so the request was not done or not recorded in the audit "
          "log; or (`sandbox-unavailable`) a required plugin's sandbox worker cannot start. "
          "`reason` names the cause; retry after Retry-After seconds.", ("Retry-After",)),
}

_HEADERS: Final[dict[str, Schema]] = {
    "X-Request-Id": {"description": "Identifies the request in the server's log and audit "
                     "trail.", "schema": {"type": "string"}},
    "WWW-Authenticate": {"description": "The authentication scheme to use.", "required": True,
                         "schema": {"type": "string", "pattern": "^Bearer "}},
    "Allow": {"description": "The methods the resource allows.", "required": True,
              "schema": {"type": "string"}},
    "Retry-After": {"description": "Seconds to wait before retrying.", "required": True,
                    "schema": {"type": "string", "pattern": "^[0-9]+$"}},
}


def _nullable(schema: Schema) -> Schema:
    """`schema` or null (JSON Schema 2020-12 type lists, as OpenAPI 3.1 uses)."""
    out = dict(schema)
    kind = out.get("type")
    if isinstance(kind, str):
        out["type"] = [kind, "null"]
    if "enum" in out:
        out["enum"] = [*out["enum"], None]
    return out


def _rewrite_refs(node: Any, prefix: str, names: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/"):
                out[key] = _REF + names[value[len("#/$defs/"):]]
            else:
                out[key] = _rewrite_refs(value, prefix, names)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(v, prefix, names) for v in node]
    return node


def needs_components(prefix: str = "Needs") -> dict[str, Schema]:
    """The needs schema as OpenAPI components: `Needs` plus one `Needs<Def>` per `$defs`.

    `$schema` and `$id` are dropped (inside the document the dialect is OpenAPI 3.1's
    and an `$id` would rebase the refs), and `#/$defs/x` refs become component refs.
    """
    from dihya.needs import needs_schema

    schema = copy.deepcopy(needs_schema())
    defs: dict[str, Schema] = schema.pop("$defs", {})
    schema.pop("$schema", None)
    schema.pop("$id", None)
    names = {name: prefix + "".join(p.capitalize() for p in re.split(r"[^A-Za-z0-9]+", name))
             for name in defs}
    out = {prefix: _rewrite_refs(schema, prefix, names)}
    for name, sub in defs.items():
        out[names[name]] = _rewrite_refs(sub, prefix, names)
    return out


_JSON_TYPES: Final = {"str": "string", "int": "integer", "float": "number"}


def audit_event_schema() -> Schema:
    """An exported audit event: the `AuditEvent` fields that are set, plus `seq` and the
    erasable `note`."""
    from dihya.audit import EVENT_TYPES, FORMATS, OUTCOMES, AuditEvent

    properties: dict[str, Schema] = {"seq": {"type": "integer", "minimum": 1}}
    for field in attrs.fields(AuditEvent):
        kind = _JSON_TYPES[str(field.type).split(" | ")[0]]
        properties[field.name] = {"type": kind}
    properties["type"]["enum"] = sorted(EVENT_TYPES)
    properties["outcome"]["enum"] = sorted(OUTCOMES)
    properties["format"]["enum"] = list(FORMATS)
    for name in ("actor", "target"):
        properties[name]["description"] = "A pseudonym (`p-` and 20 hex digits), never an id."
    properties["note"] = {"type": "string", "description": "Free text recorded with the "
                          "event (a disable reason); deleted when its author is erased."}
    properties["at_iso"] = {"type": "string", "format": "date-time",
                            "description": "`at` as ISO 8601 in UTC, to the millisecond (not "
                                           "covered by the hash chain; `at` is)."}
    return {"type": "object", "required": ["seq", "type", "outcome", "at"],
            "additionalProperties": False, "properties": properties}


def _schemas() -> dict[str, Schema]:
    from dihya.config import MODES, ROLES
    from dihya.config import PROBLEMS as CONFIG_PROBLEMS
    from dihya.gate.decide import STATUSES
    from dihya.pipeline import (
        HOOK_FAILED,
        INVALID_OUTPUT,
        OK,
        SANDBOX_UNAVAILABLE,
        SKIPPED,
        TIMEOUT,
    )
    from dihya.plugin import HOOK_SPECS
    from dihya.reasons import ProblemType
    from dihya.store.faults import StoreFault
    from dihya.web.api import DISABLE_BODY, GENERATE_BODY
    from dihya.web.audit_api import PURGE_BODY
    from dihya.web.problems import PROBLEM_TYPE_BASE

    reasons = sorted({r for rs in STATUSES.values() for r in rs})
    hooks = [spec.name for spec in HOOK_SPECS]
    string, boolean = {"type": "string"}, {"type": "boolean"}
    generate_body: Any = copy.deepcopy(GENERATE_BODY)
    generate_body["properties"]["needs"] = {"$ref": _REF + "Needs"}
    disable_body: Any = copy.deepcopy(DISABLE_BODY)
    disable_body["properties"]["reason"]["description"] = (
        "Why the plugin is switched off; kept in the state store and shown as its message.")
    return {
        **needs_components(),
        "Problem": {
            "type": "object",
            "description": "An error, as RFC 9457 problem details. Never carries a stack "
                           "trace, a token or an echo of the request's data.",
            "required": ["type", "title", "status", "detail"],
            "properties": {
                "type": {"type": "string",
                         "enum": [PROBLEM_TYPE_BASE + t for t in ProblemType],
                         "description": "A URN naming the kind of problem."},
                "title": string,
                "status": {"type": "integer", "minimum": 400, "maximum": 599},
                "detail": string,
                "request_id": {"type": "string", "description": "Also in X-Request-Id."},
                "errors": {
                    "type": "array",
                    "description": "422 only: every violation, located by a JSON pointer "
                                   "into the request body.",
                    "items": {"type": "object", "required": ["pointer", "detail"],
                              "properties": {"pointer": string, "detail": string}},
                },
                "reason": {
                    "type": "string",
                    "description": "503 only: why the service is unavailable, a reason code "
                                   "such as `store-read-only`, `disk-full`, "
                                   "`database-file-deleted`, `connection-refused` or "
                                   "`sandbox-start-failed`.",
                    "enum": [*sorted(f.value for f in StoreFault), SANDBOX_UNAVAILABLE]},
                "report": {
                    "type": "object",
                    "description": "A failed generation (502, or 503 "
                                   "`sandbox-unavailable`): how each hook went.",
                    "required": ["plugins"],
                    "properties": {"plugins": {"type": "array",
                                               "items": {"$ref": _REF + "HookResult"}}},
                },
            },
        },
        "GenerateRequest": generate_body,
        "DisableRequest": disable_body,
        "AuditEvent": audit_event_schema(),
        "PurgeRequest": copy.deepcopy(PURGE_BODY),
        "PurgeResult": {
            "type": "object",
            "required": ["events", "notes", "tokens", "switches", "logs", "retention",
                         "floor_days", "kept_events", "kept_logs", "kept_reason"],
            "additionalProperties": False,
            "properties": {
                "events": {"type": "integer", "minimum": 0, "description": "Events made "
                           "unlinkable (subject), removed (older_than_days), or naming the "
                           "plugin and kept in the chain (plugin). A subject who still has "
                           "events younger than the floor keeps their pseudonym mapping: 0."},
                "floor_days": {"type": "number", "minimum": 0, "description": "The purge "
                               "floor in force (`[audit] http_purge_min_age_days`): over "
                               "HTTP, what is younger than this many days stays. 0: none."},
                "kept_events": {"type": "integer", "minimum": 0, "description": "Events "
                                "younger than the floor left as they were: their notes "
                                "stay and, for a subject, so does their pseudonym mapping."},
                "kept_logs": {"type": "integer", "minimum": 0, "description": "The "
                              "plugin's log records younger than the floor, left (plugin)."},
                "kept_reason": {"type": ["string", "null"], "description": "Why something "
                                "was kept back, for people; null when nothing was."},
                "logs": {"type": "integer", "minimum": 0,
                         "description": "The plugin's log records removed (plugin)."},
                "notes": {"type": "integer", "minimum": 0},
                "tokens": {"type": "integer", "minimum": 0},
                "switches": {"type": "integer", "minimum": 0,
                             "description": "Plugin switches whose author and reason were "
                                            "erased."},
                "retention": {"type": "integer", "minimum": 0,
                              "description": "Events then removed by the retention period."},
            },
        },
        "PluginLogRecord": {
            "type": "object",
            "description": "One record a plugin logged through `self.logger`, personal data "
                           "replaced by placeholders (`[needs]`, `[email]`, `[phone]`, "
                           "`[token]`).",
            "required": ["at", "plugin", "version", "request_id", "level", "template", "args",
                         "error", "cut_bytes", "message"],
            "additionalProperties": False,
            "properties": {
                "at": {"type": "number", "description": "Seconds since the epoch."},
                "at_iso": {"type": "string", "format": "date-time",
                           "description": "`at` in ISO 8601 (UTC), in exports only (as on "
                                          "their events)."},
                "plugin": {"type": "string"},
                "version": {"type": ["string", "null"]},
                "request_id": {"type": ["string", "null"],
                               "description": "The request that ran the plugin (null from "
                                              "the CLI)."},
                "level": {"type": "string",
                          "enum": ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]},
                "template": {"type": "string", "description": "The format string, redacted."},
                "args": {"type": ["array", "object"],
                         "description": "Its arguments, redacted."},
                "error": {"type": ["string", "null"],
                          "description": "The type name of the exception logged, if any."},
                "cut_bytes": {"type": "integer", "minimum": 0,
                              "description": "Bytes over the per-record cap, not stored."},
                "message": {"type": "string", "description": "The two put together."},
            },
        },
        "HookResult": {
            "type": "object",
            "description": "How one hook of one plugin went; never carries needs or code.",
            "required": ["name", "hook", "status", "ms"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "description": "The plugin."},
                "hook": {"type": "string", "enum": [*hooks, "*"],
                         "description": "`*`: the whole plugin (skipped by its ACL)."},
                "status": {"type": "string",
                           "enum": [OK, SKIPPED, HOOK_FAILED, TIMEOUT, INVALID_OUTPUT]},
                "ms": {"type": "number", "minimum": 0},
                "detail": {"type": "string", "description": _NAMES_ONLY},
            },
        },
        "GenerationReport": {
            "type": "object",
            "required": ["plugins", "needs_sha256", "ms", "file_count"],
            "additionalProperties": False,
            "properties": {
                "plugins": {"type": "array", "items": {"$ref": _REF + "HookResult"}},
                "needs_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$",
                                 "description": "SHA-256 of the canonical JSON of the needs."},
                "ms": {"type": "number", "minimum": 0},
                "file_count": {"type": "integer", "minimum": 0},
            },
        },
        "GenerateResponse": {
            "type": "object",
            "required": ["files", "report"],
            "additionalProperties": False,
            "properties": {
                "files": {"type": "object", "additionalProperties": string,
                          "description": "Relative POSIX paths mapped to the files' text."},
                "report": {"$ref": _REF + "GenerationReport"},
            },
        },
        "Action": {
            "type": "object",
            "required": ["name", "description", "input_schema"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z][a-z0-9-]{0,62}$"},
                "description": string,
                "input_schema": {"type": "object", "description": "JSON Schema (2020-12) "
                                 "of the action's request body."},
            },
        },
        "Plugin": {
            "type": "object",
            "description": "A discovered plugin and what the core decided about it.",
            "required": ["name", "distribution", "version", "status", "reason", "message",
                         "mode", "fingerprint", "approved_fingerprint", "hooks", "required",
                         "roles", "safe", "priority", "entry_point", "description", "author",
                         "isolation", "warnings", "worker_user", "actions"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "description": "The entry-point name."},
                "distribution": string,
                "version": string,
                "status": {"type": "string", "enum": list(STATUSES)},
                "reason": _nullable({"type": "string", "enum": reasons,
                                     "description": "Why the plugin is not active."}),
                "message": {"type": "string",
                            "description": "What the core decided and why, in words. "
                                           + _NAMES_ONLY},
                "mode": _nullable({"type": "string", "enum": list(MODES)}),
                "fingerprint": _nullable({"type": "string", "pattern": "^sha256:"}),
                "approved_fingerprint": _nullable({"type": "string", "pattern": "^sha256:"}),
                "hooks": {"type": "array", "items": {"type": "string", "enum": hooks}},
                "required": boolean,
                "roles": _nullable({"type": "array",
                                    "items": {"type": "string", "enum": list(ROLES)},
                                    "description": "Roles allowed to run it; null: all."}),
                "safe": _nullable(boolean),
                "priority": _nullable({"type": "integer"}),
                "entry_point": {"type": "string", "description": "`module:Class`."},
                "description": _nullable(string),
                "author": _nullable(string),
                "isolation": {"type": "array", "items": string},
                "warnings": {"type": "array", "items": string,
                             "description": "Isolation warnings and deprecations. "
                                            + _NAMES_ONLY},
                "worker_user": _nullable({
                    "type": "string",
                    "description": "Who the plugin's sandbox worker runs as: the sandbox "
                                   "user, `root` (only with `[sandbox] allow_root`) or the "
                                   "backend's own user; null in-process."}),
                "actions": {"type": "array", "items": {"$ref": _REF + "Action"}},
            },
        },
        "Health": {
            "type": "object", "required": ["status"], "additionalProperties": False,
            "properties": {"status": {"type": "string", "enum": ["ok"]}},
        },
        "Readiness": {
            "type": "object",
            "required": ["status", "checks", "plugins_active"],
            "additionalProperties": False,
            "properties": {
                "status": {"type": "string", "enum": ["ok", "unavailable"]},
                "checks": {"type": "object",
                           "required": ["config", "registry", "store", "audit", "sandbox"],
                           "additionalProperties": boolean,
                           "description": "`store`: a write commits (a heartbeat row is "
                                          "rewritten); `audit`: audit commits are neither "
                                          "stuck, backed up nor failing.",
                           "properties": {"config": boolean, "registry": boolean,
                                          "store": boolean, "audit": boolean,
                                          "sandbox": boolean}},
                "store_problem": _nullable({
                    "type": "object", "required": ["reason", "message"],
                    "additionalProperties": False,
                    "description": "Why the store takes no write (null when it does): "
                                   "`store-read-only`, `disk-full`, `database-file-deleted`, "
                                   "`connection-refused`...; the message says what to do.",
                    "properties": {"reason": {"type": "string",
                                              "enum": sorted(f.value for f in StoreFault)},
                                   "message": string}}),
                "audit": {
                    "type": "object",
                    "required": ["ok", "pending", "in_flight", "in_flight_s", "problem"],
                    "additionalProperties": False,
                    "description": "This worker's audit commits (each answer waits for its "
                                   "own): events waiting, events in the commit running and "
                                   "for how long, and why `checks.audit` fails if it does.",
                    "properties": {
                        "ok": boolean,
                        "pending": {"type": "integer", "minimum": 0},
                        "in_flight": {"type": "integer", "minimum": 0},
                        "in_flight_s": {"type": "number", "minimum": 0},
                        "problem": _nullable({
                            "type": "object", "required": ["reason", "message"],
                            "additionalProperties": False,
                            "properties": {"reason": string, "message": string}})}},
                "plugins_active": {"type": "integer", "minimum": 0},
                "state_version": {"type": "integer", "minimum": 0, "description":
                                  "The store's state version this worker's registry was "
                                  "built for; every switch and reload bumps it."},
                "registry_age_s": {"type": ["number", "null"], "minimum": 0, "description":
                                   "Seconds since this worker built its registry."},
                "sandbox": {
                    "type": "object", "required": ["failed", "worker_users"],
                    "additionalProperties": False,
                    "description": "Sandbox workers: the approved plugins whose worker "
                                   "cannot start (`checks.sandbox` is false then) and the "
                                   "users the running workers run as.",
                    "properties": {"failed": {"type": "array", "items": string},
                                   "worker_users": {"type": "array", "items": string}}},
                "config_problem": _nullable({
                    "type": "object", "required": ["reason", "message"],
                    "additionalProperties": False,
                    "description": "Why the config file on disk is not the one in use "
                                   "(the last good config keeps serving); null when it is.",
                    "properties": {
                        "reason": {"type": "string", "enum": list(CONFIG_PROBLEMS)},
                        "message": string}}),
                "pth": {"type": "array", "description":
                        "The `.pth` files of the interpreter's site directories that run "
                        "code at start-up (an `import` line), as of the last registry "
                        "build; `plugins verify` also gives their paths.",
                        "items": {"$ref": _REF + "PthFile"}},
                "pth_unacknowledged": {"type": "integer", "minimum": 0, "description":
                                       "How many of them no `[[plugins.known_pth]]` entry "
                                       "(or setuptools' own list) acknowledges."},
            },
        },
        "PthFile": {
            "type": "object",
            "required": ["file", "owner", "sha256", "acknowledged", "acknowledged_by"],
            "additionalProperties": False,
            "properties": {
                "file": {"type": "string", "description": "The file name."},
                "owner": {"type": ["string", "null"], "description":
                          "The distribution whose RECORD lists it; null: no owner."},
                "sha256": {"type": ["string", "null"], "description":
                           "SHA-256 of its content; null when it cannot be read."},
                "acknowledged": boolean,
                "acknowledged_by": {"enum": ["config", "builtin", None], "description":
                                    "`config`: a `[[plugins.known_pth]]` entry; `builtin`: "
                                    "a `distutils-precedence.pth` exactly as setuptools "
                                    "ships it."},
            },
        },
    }


def _error_responses() -> dict[str, Schema]:
    from dihya.config import Config
    from dihya.needs import MAX_NEEDS_BYTES

    rate = attrs.fields(Config).rate_limit.default
    out = {}
    for name, description, headers in _ERRORS.values():
        out[name] = {
            "description": description.format(limit=MAX_NEEDS_BYTES, rate=rate),
            "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"},
                        **{h: {"$ref": f"#/components/headers/{h}"} for h in headers}},
            "content": {_PROBLEM_MEDIA: {"schema": {"$ref": _REF + "Problem"}}},
        }
    return out


def _json(schema_name: str, description: str) -> Schema:
    return {"description": description,
            "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}},
            "content": {"application/json": {"schema": {"$ref": _REF + schema_name}}}}


def _plugin_links(name: str) -> dict[str, Schema]:
    """Links from a response naming a plugin to the operations on that plugin."""
    return {op_id[0].upper() + op_id[1:]: {"operationId": op_id, "parameters": {"name": name}}
            for op_id in ("showPlugin", "disablePlugin", "enablePlugin")}


def _plugin(description: str) -> Schema:
    return {**_json("Plugin", description), "links": _plugin_links("$response.body#/name")}


def _errors(*statuses: int) -> dict[str, Schema]:
    return {str(s): {"$ref": _RESP + _ERRORS[s][0]} for s in sorted(statuses)}


_NAME_PARAM: Final = {
    "name": "name", "in": "path", "required": True,
    "description": ("The plugin's entry-point name (`reload` alone is a route, not a name). "
                    "A name holding `/` is sent with its `/` as is or as `%2F`."),
    "schema": {"type": "string", "pattern": "^(?!reload$)[^/]+$"},
}
_ACTION_PARAM: Final = {
    "name": "action", "in": "path", "required": True, "description": "The action's name.",
    "schema": {"type": "string", "pattern": "^[^/]+$"},
}


def operation_id(view: Callable[..., Any]) -> str:
    """The operationId of a view: its name in camelCase (`list_plugins`: `listPlugins`)."""
    first, *rest = view.__name__.split("_")
    return first + "".join(part.title() for part in rest)


def _authenticated(view: Callable[..., Any], summary: str, responses: dict[str, Schema],
                   *statuses: int, **extra: Any) -> Schema:
    """An operation behind a bearer token: 401 always, 403 when a lower role exists. The
    operationId and the role come from the view (its name, its `@require`)."""
    from dihya.web.auth import ROLE_RANK, required_role

    op_id = operation_id(view)
    role = required_role(view)
    if role is None:
        raise TypeError(f"{op_id} is documented as authenticated but has no @require")
    errors = {401, 500, 503, *statuses}  # 503: every authenticated call needs the store
    if ROLE_RANK[role] > min(ROLE_RANK.values()):
        errors.add(403)
    description = f"Needs a token with the role `{role}` or higher."
    if "description" in extra:
        description = extra.pop("description") + "\n\n" + description
    return {"operationId": op_id, "summary": summary, "description": description,
            "tags": ["api"], "x-required-role": role, **extra,
            "responses": {**responses, **_errors(*errors)}}


def _public(op_id: str, summary: str, responses: dict[str, Schema]) -> Schema:
    return {"operationId": op_id, "summary": summary, "tags": ["service"], "security": [],
            "responses": {**responses, **_errors(500)}}


def _paths() -> dict[str, Schema]:
    from dihya.web.api import (
        call_plugin_action,
        disable_plugin,
        enable_plugin,
        generate,
        list_plugins,
        plugin_logs,
        reload_plugins,
        show_plugin,
    )
    from dihya.web.audit_api import export_audit, purge_audit

    return {
        "/healthz": {"get": _public("healthz", "Liveness: the process answers",
                                    {"200": _json("Health", "Alive.")})},
        "/readyz": {"get": _public("readyz", "Readiness: would a generation succeed now", {
            "200": _json("Readiness", "Ready."),
            "503": {**_json("Readiness", "Not ready; `checks` says what failed, "
                                         "`config_problem`, `store_problem`, `audit.problem` "
                                         "and `sandbox.failed` say why."),
                    "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"},
                                "Retry-After": {"$ref": "#/components/headers/Retry-After"}}},
        })},
        "/openapi.json": {"get": _public("openapi", "This document", {
            "200": {"description": "The OpenAPI 3.1 document.",
                    "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}},
                    "content": {"application/json": {"schema": {"type": "object"}}}},
        })},
        "/api/v1/generate": {"post": _authenticated(
            generate, "Generate code from needs",
            {"200": _json("GenerateResponse", "The generated files and the report.")},
            400, 413, 415, 422, 429, 502,
            description="Validates the needs, runs the active plugins the caller's role may "
                        "run, and returns the files. Rate limited per token.",
            requestBody={"required": True, "content": {"application/json": {
                "schema": {"$ref": _REF + "GenerateRequest"},
                "example": {"needs": NEEDS_EXAMPLE}}}},
        )},
        "/api/v1/plugins": {"get": _authenticated(
            list_plugins, "List every discovered plugin",
            {"200": {**_json("Plugin", "Every discovered plugin."), "content": {
                "application/json": {"schema": {"type": "array",
                                                "items": {"$ref": _REF + "Plugin"}}}},
                "links": _plugin_links("$response.body#/0/name")}},
        )},
        "/api/v1/plugins/reload": {"post": _authenticated(
            reload_plugins, "Rebuild the plugin registry on every worker and node",
            {"200": {**_json("Plugin", "Every discovered plugin, after this worker's rebuild."),
                     "content": {"application/json": {"schema": {
                         "type": "array", "items": {"$ref": _REF + "Plugin"}}}}}},
            description="Bumps the shared state version (every worker sharing the store "
                        "rebuilds within a second) and rebuilds this worker at once: "
                        "rediscover, verify, load. Generations under way finish on the "
                        "registry they started with.",
        )},
        "/api/v1/plugins/{name}": {
            "parameters": [_NAME_PARAM],
            "get": _authenticated(show_plugin, "Show one plugin",
                                  {"200": _plugin("The plugin.")}, 404),
        },
        "/api/v1/plugins/{name}/enable": {
            "parameters": [_NAME_PARAM],
            "post": _authenticated(
                enable_plugin, "Lift an admin's (or a quarantine's) switch",
                {"200": _plugin("The plugin, after the switch.")}, 404, 409,
                description="409 when the config file or DIHYA_PLUGINS_DISABLE switched it "
                            "off: an admin switch cannot override those."),
        },
        "/api/v1/plugins/{name}/disable": {
            "parameters": [_NAME_PARAM],
            "post": _authenticated(
                disable_plugin, "Switch a plugin off at once, on every worker",
                {"200": _plugin("The plugin, after the switch.")},
                400, 404, 413, 415, 422,
                requestBody={"required": False, "content": {"application/json": {
                    "schema": {"$ref": _REF + "DisableRequest"}}}}),
        },
        "/api/v1/plugins/{name}/logs": {
            "parameters": [_NAME_PARAM],
            "get": _authenticated(
                plugin_logs, "What a plugin logged, personal data redacted",
                {"200": {"description": "The newest records (at most `limit`), oldest first.",
                         "headers": {"X-Request-Id": {
                             "$ref": "#/components/headers/X-Request-Id"}},
                         "content": {"application/json": {"schema": {
                             "type": "array", "items": {"$ref": _REF + "PluginLogRecord"}}}}}},
                422,
                description="Records stay after the plugin is removed, until the retention "
                            "period (`[audit] plugin_log_retention_days`) or a purge by "
                            "plugin removes them.",
                parameters=_logs_parameters()),
        },
        "/api/v1/audit/export": {"get": _authenticated(
            export_audit, "Export the audit log, one subject's events (GDPR access), or one "
            "plugin's events and log records",
            {"200": {"description": "Every matching event, oldest first; with `plugin`, an "
                                    "object `{plugin, events, logs}` (json) or rows with a "
                                    "`kind` (jsonl).",
                     "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}},
                     "content": {
                         "application/json": {"schema": {"oneOf": [
                             {"type": "array", "items": {"$ref": _REF + "AuditEvent"}},
                             {"type": "object", "required": ["plugin", "events", "logs"],
                              "properties": {
                                  "plugin": {"type": "string"},
                                  "events": {"type": "array",
                                             "items": {"$ref": _REF + "AuditEvent"}},
                                  "logs": {"type": "array",
                                           "items": {"$ref": _REF + "PluginLogRecord"}}}}]}},
                         "application/jsonl": {"schema": {
                             "type": "string", "description": "One AuditEvent object per "
                             "line (`format=jsonl`)."}},
                         "text/csv": {"schema": {"type": "string"}}}}},
            422,
            description="The export is itself audited, with the subject as a pseudonym.",
            parameters=_export_parameters())},
        "/api/v1/audit/purge": {"post": _authenticated(
            purge_audit, "Erase a subject, old events or a plugin's records (GDPR erasure)",
            {"200": _json("PurgeResult", "What was erased.")},
            400, 413, 415, 422,
            description="A subject's events stay in the hash chain but become unlinkable: "
                        "their pseudonym mapping, notes and tokens are deleted. A plugin's "
                        "log records and the notes of its events are deleted; its events "
                        "stay in the chain. Then the retention period is applied. Audited "
                        "without the subject.\n\nOver HTTP a purge stops at a floor, "
                        "`[audit] http_purge_min_age_days` (default 1 day): a purge by age "
                        "below it is refused (403, audited as `audit.purged` with outcome "
                        "`denied`, `reason: purge-floor`); a purge by subject or plugin "
                        "leaves the events, notes and log records younger than it "
                        "(`kept_events`, `kept_logs`, `kept_reason`). `dihya audit purge` on "
                        "the server is not limited.",
            requestBody={"required": True, "content": {"application/json": {
                "schema": {"$ref": _REF + "PurgeRequest"}}}})},
        "/api/v1/plugins/{name}/actions/{action}": {
            "parameters": [_NAME_PARAM, _ACTION_PARAM],
            "post": _authenticated(
                call_plugin_action, "Call an action a plugin exposes",
                {"200": {"description": "The action's result, a JSON object.",
                         "headers": {"X-Request-Id": {
                             "$ref": "#/components/headers/X-Request-Id"}},
                         "content": {"application/json": {"schema": {"type": "object"}}}}},
                400, 404, 409, 413, 415, 422, 429, 502,
                description="The body must match the action's `input_schema` (see the "
                            "plugin's `actions`). Rate limited per token; also subject to "
                            "the plugin's role allowlist (403).",
                requestBody={"required": True, "content": {
                    "application/json": {"schema": {"type": "object"}}}}),
        },
    }


def _export_parameters() -> list[Schema]:
    from dihya.web.audit_api import EXPORT_QUERY

    return _parameters(EXPORT_QUERY)


def _logs_parameters() -> list[Schema]:
    from dihya.web.api import LOGS_QUERY

    return _parameters(LOGS_QUERY)


def _parameters(query: Schema) -> list[Schema]:
    props = query["properties"]
    return [{"name": name, "in": "query", "required": False,
             "description": schema.get("description", "`json`, `jsonl` or `csv`."),
             "schema": {k: v for k, v in schema.items() if k != "description"}}
            for name, schema in props.items()]


@functools.cache
def _document() -> dict[str, Any]:
    from dihya import __version__

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Dihya generation backend",
            "version": __version__,
            "description": "Generate code from needs with operator-approved plugins, and "
                           "manage those plugins. Errors are `application/problem+json` "
                           "(RFC 9457). Tokens come from `dihya tokens create`.",
            "license": {"name": "AGPL-3.0-or-later", "identifier": "AGPL-3.0-or-later"},
        },
        "tags": [{"name": "api", "description": "Authenticated API."},
                 {"name": "service", "description": "Unauthenticated service routes."}],
        "security": [{"bearerAuth": []}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {"bearerAuth": {
                "type": "http", "scheme": "bearer",
                "description": "`Authorization: Bearer dihya_<id>_<secret>`; roles viewer < "
                               "developer < admin."}},
            "schemas": _schemas(),
            "responses": _error_responses(),
            "headers": _HEADERS,
        },
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1.0 document of every route the app serves (a fresh copy)."""
    return copy.deepcopy(_document())


@openapi.get("/openapi.json")
def document() -> Response:
    return jsonify(openapi_document())
