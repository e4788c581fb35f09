"""The `/api/v1` routes: generate, plugin listing and switches, plugin actions.

Thin: each view authenticates, validates its input strictly, calls one core function and
audits the outcome. Rate limits (per token) apply to generation and actions.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterable
from typing import Any, Final

from flask import Blueprint, Response, current_app, g, jsonify, request
from werkzeug.routing import BaseConverter

from dihya.audit import hook_event_type
from dihya.needs import (
    MAX_PROBLEMS,
    JsonDepthError,
    NeedsError,
    Problem,
    first_errors,
    load_json,
    more_problems,
)
from dihya.pipeline import (
    SANDBOX_UNAVAILABLE,
    GenerationFailed,
    default_executor,
    needs_digest,
    run_generation,
)
from dihya.pluginlog import Collector, LogLimits, collecting
from dihya.pluginlog.collect import LEVELS
from dihya.reasons import ProblemType
from dihya.registry import PluginRecord
from dihya.sandbox.executor import HookTimeout
from dihya.store.faults import RETRY_AFTER_S
from dihya.web import operations
from dihya.web.auth import current_token, require, state
from dihya.web.operations import record_or_404
from dihya.web.problems import ApiProblem
from dihya.web.ratelimit import per_token
from dihya.web.serverpaths import PathFilter, for_role, plugin_row, report_for

MAX_ACTION_RESULT_BYTES: Final = 1024 * 1024
GENERATE_BODY: Final = {
    "type": "object", "required": ["needs"], "additionalProperties": False,
    "properties": {"needs": {"type": "object"}},
}
DISABLE_BODY: Final = {
    "type": "object", "additionalProperties": False,
    "properties": {"reason": {"type": "string", "maxLength": 500}},
}
_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def json_body(optional: bool = False) -> Any:
    """The request's JSON body; 415 for another media type, 400 for malformed JSON."""
    raw = request.get_data(cache=True)
    if optional and not raw:
        return {}
    mimetype = request.mimetype or ""
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise ApiProblem(415, ProblemType.UNSUPPORTED_MEDIA_TYPE, "Unsupported Media Type",
                         "Send the body as JSON with `Content-Type: application/json`.")
    try:
        return load_json(raw)
    except JsonDepthError as exc:
        raise ApiProblem(400, ProblemType.MALFORMED_JSON, "JSON nested too deeply",
                         f"The request body's {exc}.") from exc
    except json.JSONDecodeError as exc:
        raise ApiProblem(400, ProblemType.MALFORMED_JSON, "Malformed JSON",
                         f"The request body is not valid JSON at line {exc.lineno}, column "
                         f"{exc.colno}.") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        where = ""
        raise ApiProblem(400, ProblemType.MALFORMED_JSON, "Malformed JSON",
                         f"The request body is not valid JSON{where}.") from exc


def validate_body(schema: dict[str, Any], body: Any) -> None:
    """422 listing the schema violations of `body` (the first MAX_PROBLEMS, then one entry
    saying more were found), each with its JSON pointer."""
    if schema is GENERATE_BODY and type(body) is dict and body.keys() == {"needs"} \
            and type(body["needs"]) is dict:
        return  # what the schema asks, checked without jsonschema's walk (JSON's types)
    errors, more = first_errors(_validator(schema).iter_errors(body), MAX_PROBLEMS)
    if errors:
        listed = [{"pointer": _pointer(e.absolute_path), "detail": _schema_detail(e)}
                  for e in errors]
        if more:
            listed.append({"pointer": "", "detail": more_problems().message})
        raise _unprocessable(listed)


#: Validators of the schemas bodies were checked against, by `id` (the schema kept alive
#: beside its validator, so an id is never reused while cached): building one per request
#: cost more than validating. Bounded: plugin action schemas change with reloads.
_VALIDATORS: dict[int, tuple[dict[str, Any], Any]] = {}
_VALIDATORS_MAX: Final = 256


def _validator(schema: dict[str, Any]) -> Any:
    cached = _VALIDATORS.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    if len(_VALIDATORS) >= _VALIDATORS_MAX:
        _VALIDATORS.clear()
    _VALIDATORS[id(schema)] = (schema, validator)
    return validator


def prepare_body_validators() -> None:
    """Build the validators of the core's own request bodies now (as `dihya serve`'s
    arbiter does before it forks its workers), rather than at each worker's first call."""
    for schema in (GENERATE_BODY, DISABLE_BODY, LOGS_QUERY):
        _validator(schema)


def _schema_detail(error: Any) -> str:
    from dihya.needs import _schema_message

    return _schema_message(error)


def _pointer(parts: Any) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def needs_pointer(problem: Problem) -> str:
    """`$.entities[0].name` -> `/needs/entities/0/name`."""
    parts: list[str] = ["needs"]
    for key, index in _PATH_PART.findall(problem.path[1:]):
        parts.append(key or index)
    return _pointer(parts)


def _unprocessable(errors: list[dict[str, str]]) -> ApiProblem:
    count = len(errors)
    if errors and errors[-1]["detail"] == more_problems().message:
        detail = (f"More than {MAX_PROBLEMS} problems in the request body; the first "
                  f"{MAX_PROBLEMS} are listed.")
    else:
        detail = f"{count} problem{'s' if count != 1 else ''} in the request body."
    return ApiProblem(422, ProblemType.VALIDATION, "Unprocessable Content", detail, errors=errors)


def log_limits() -> LogLimits:
    """The caps on plugin log records, from the config."""
    config = state().config
    return LogLimits(config.plugin_log_records, config.plugin_log_bytes)


def keep_plugin_logs(collector: Collector) -> None:
    """Store what the plugins logged during this request, redacted and capped."""
    from dihya.store.pluginlogs import write

    records = collector.finish()
    if records:
        write(state().store, records)


def _record_or_404(name: str) -> PluginRecord:
    return record_or_404(state(), name)


class PluginNameConverter(BaseConverter):
    """A plugin name in a URL. An entry-point name may hold `/` (only `=` is forbidden), so
    the name may span segments, written as is or as `%2F` (the server decodes both alike):
    `POST /api/v1/plugins/acme/pdf/disable` switches off `acme/pdf`, the one plugin the
    backend must still be able to kill. The route's own suffix wins over a longer name
    (`GET .../acme/logs` is the logs of `acme`). A bare `reload` is the reload route."""

    regex = r"(?!reload$)[^/].*?"
    part_isolating = False


class PluginPageConverter(PluginNameConverter):
    """The name in a plugin's own URL (`GET .../plugins/<name>`): never one that ends like
    one of its sub-routes (`/disable`, `/enable`, `/logs`, `/approve`, `/reset-quarantine`,
    `/actions/<action>`), so that the page's `GET` is not offered for a sub-route's URL
    (`OPTIONS .../plugins/x/disable` lists `POST` only)."""

    regex = (r"(?!reload$)(?!.*/(?:disable|enable|logs|approve|reset-quarantine)$)"
             r"(?!.*/actions/[^/]+$)[^/].*?")


api = Blueprint("api", __name__, url_prefix="/api/v1")


@api.post("/generate")
@require("developer")
@per_token
def generate() -> Response:
    body = json_body()
    validate_body(GENERATE_BODY, body)
    token = current_token()
    st = state()
    request_id: str = g.request_id  # one look-up through Flask's context, not six
    # the canonical JSON's size and hash (the report's needs_sha256), remembered per needs
    needs_bytes, needs_sha256 = needs_digest(body["needs"])
    audit = {"subject": token.name, "role": token.role, "request_id": request_id,
             "needs_sha256": needs_sha256, "needs_bytes": needs_bytes}
    snapshot = st.current(request_id)  # never runs a plugin switched off before now
    try:
        # no active plugin: no hook runs, so none can log; nothing to collect
        logs = (collecting(request_id, body["needs"], log_limits()) if snapshot.active
                else contextlib.nullcontext())
        with logs as plugin_logs:
            try:
                # parsed by `json_body` (depth checked) and hashed above: done once;
                # its summary line at DEBUG: the audit line below says it all
                result = run_generation(body["needs"], snapshot, role=token.role,
                                        request_id=request_id, loaded=True,
                                        needs_sha256=needs_sha256, audited=True)
            finally:
                if plugin_logs is not None:
                    keep_plugin_logs(plugin_logs)
    except NeedsError as exc:
        st.auditor.record("generation", "invalid", **audit)
        raise _unprocessable([{"pointer": needs_pointer(p), "detail": p.message}
                              for p in exc.problems]) from exc
    except GenerationFailed as exc:
        st.auditor.record("generation", "failed", **audit)
        if exc.reason == SANDBOX_UNAVAILABLE:
            # a required plugin cannot run because no sandbox worker can start: the
            # service, not the request or the plugin, is at fault (like a down store)
            raise ApiProblem(503, ProblemType.SANDBOX_UNAVAILABLE, "Service Unavailable",
                             "A required plugin cannot run: its sandbox worker cannot "
                             "start. Retry after the number of seconds in Retry-After.",
                             headers={"Retry-After": str(RETRY_AFTER_S)},
                             reason=SANDBOX_UNAVAILABLE,
                             report=report_for({"plugins": [h.to_json() for h in exc.plugins]},
                                               _paths())) from exc
        raise ApiProblem(502, ProblemType.GENERATION_FAILED, "Generation failed",
                         f"The generation could not complete at stage `{exc.stage}`.",
                         report=report_for({"plugins": [h.to_json() for h in exc.plugins]},
                                           _paths())) from exc
    snapshot_records: dict[str, PluginRecord] | None = None  # built on a failure only
    for h in result.plugins:
        if h.status not in ("ok", "skipped"):
            if snapshot_records is None:
                snapshot_records = {r.name: r for r in snapshot.records}
            record = snapshot_records.get(h.name)
            st.auditor.record(hook_event_type(h), "failed", plugin=h.name, reason=h.status,
                              action=h.hook, request_id=request_id,
                              duration_ms=round(h.ms, 2),
                              plugin_version=record.version if record else None,
                              plugin_fingerprint=record.fingerprint if record else None)
    st.note_outcomes(((h.name, h.status == "ok") for h in result.plugins
                      if h.status != "skipped"), request_id)
    code_text, code_sha256 = result.files_canonical()
    st.auditor.record(
        "generation", "ok", files=len(result.files), code_bytes=len(code_text),
        code_sha256=code_sha256,
        plugins_ok=sum(h.status == "ok" for h in result.plugins),
        plugins_failed=sum(h.status not in ("ok", "skipped") for h in result.plugins),
        duration_ms=round(result.ms, 2), **audit)
    return _generated(code_text, report_for(result.report(), _paths()))


def _generated(code_text: bytes, report: dict[str, Any]) -> Response:
    """`{"files": ..., "report": ...}` with the files as the canonical JSON already made for
    `code_sha256` (sorted keys, compact, UTF-8: the bytes hashed are the bytes sent),
    instead of encoding the whole project a second time; the report as `jsonify` writes it."""
    body = b'{"files":' + code_text + b',"report":' + \
        current_app.json.dumps(report).encode("utf-8") + b"}"
    return current_app.response_class(body, mimetype="application/json")


def _paths() -> PathFilter:
    """How this request's token may see the server's paths (`dihya.web.serverpaths`)."""
    return for_role(current_token().role, state().config_path)


def _rows(records: Iterable[PluginRecord]) -> Response:
    """Plugin rows as this request's token may see them."""
    paths = _paths()
    return jsonify([plugin_row(r.to_json(), paths) for r in records])


def _row(record: PluginRecord) -> Response:
    return jsonify(plugin_row(record.to_json(), _paths()))


@api.get("/plugins")
@require("viewer")
def list_plugins() -> Response:
    return _rows(state().current(g.request_id).records)


@api.get("/plugins/<plugin_page:name>")
@require("viewer")
def show_plugin(name: str) -> Response:
    return _row(_record_or_404(name))


@api.post("/plugins/<plugin:name>/disable")
@require("admin")
def disable_plugin(name: str) -> Response:
    _record_or_404(name)
    body = json_body(optional=True)
    validate_body(DISABLE_BODY, body)
    record = operations.disable_plugin(state(), current_token(), name, body.get("reason"),
                                       g.request_id)
    return _row(record)


#: The query of `GET /api/v1/plugins/<name>/logs`.
LOGS_QUERY: Final[dict[str, Any]] = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "since": {"type": "string", "pattern": r"^[0-9]{1,12}(\.[0-9]{1,6})?$",
                  "description": "Only records made at or after this time, in seconds since "
                                 "the epoch."},
        "level": {"type": "string", "enum": list(LEVELS),
                  "description": "Only records at this level or above."},
        "limit": {"type": "string", "pattern": r"^[1-9][0-9]{0,4}$",
                  "description": "At most this many records, the newest (default 1000)."},
    },
}


@api.get("/plugins/<plugin:name>/logs")
@require("admin")
def plugin_logs(name: str) -> Response:
    """What the plugin logged, redacted, oldest first (installed or not: its records stay
    until retention or a purge removes them)."""
    from dihya.store.pluginlogs import read

    query = request.args.to_dict()
    validate_body(LOGS_QUERY, query)
    since = float(query["since"]) if "since" in query else None
    records = read(state().store, name, since=since, level=query.get("level"),
                   limit=int(query.get("limit", 1000)))
    return jsonify([r.to_json() for r in records])


@api.post("/plugins/reload")
@require("admin")
def reload_plugins() -> Response:
    snapshot = operations.reload_plugins(state(), g.request_id)
    return _rows(snapshot.records)


@api.post("/plugins/<plugin:name>/enable")
@require("admin")
def enable_plugin(name: str) -> Response:
    record = operations.enable_plugin(state(), current_token(), name, g.request_id)
    return _row(record)


@api.post("/plugins/<plugin:name>/actions/<action_name>")
@require("developer")
@per_token
def call_plugin_action(name: str, action_name: str) -> Response:
    st, token = state(), current_token()
    record = _record_or_404(name)
    if not record.active:
        raise ApiProblem(409, ProblemType.PLUGIN_INACTIVE, "Plugin not active",
                         f"The plugin is {record.status} ({record.reason}).")
    spec = record.actions.get(action_name)
    if spec is None:
        raise ApiProblem(404, ProblemType.UNKNOWN_ACTION, "Unknown action",
                         "This plugin has no such action; GET /api/v1/plugins/<name> lists its "
                         "actions.")
    audit = {"subject": token.name, "role": token.role, "plugin": name, "action": action_name,
             "plugin_version": record.version, "request_id": g.request_id}
    if record.roles is not None and token.role not in record.roles:
        st.auditor.record("acl.denied", "denied", reason="plugin-acl", **audit)
        raise ApiProblem(403, ProblemType.FORBIDDEN, "Forbidden",
                         "This plugin's allowlist entry does not let your role run it.")
    payload = json_body()
    validate_body(spec.input_schema, payload)
    start = time.perf_counter()
    try:
        with collecting(g.request_id, payload, log_limits()) as plugin_logs:
            try:
                result = default_executor(record).call(record, spec.method,
                                                       {"payload": payload},
                                                       st.config.hook_timeout_s)
            finally:
                keep_plugin_logs(plugin_logs)
    except HookTimeout as exc:
        st.auditor.record("plugin.action", "failed", reason="timeout", **audit)
        raise ApiProblem(502, ProblemType.PLUGIN_FAILED, "Plugin action failed",
                         "The action did not answer within the hook timeout.") from exc
    except Exception as exc:
        st.auditor.record("plugin.action", "failed", reason="exception", **audit)
        raise ApiProblem(502, ProblemType.PLUGIN_FAILED, "Plugin action failed",
                         f"The action raised {type(exc).__name__}.") from exc
    ms = (time.perf_counter() - start) * 1000
    try:
        text = json.dumps(result, allow_nan=False)
    except (TypeError, ValueError):
        text = None
    if not isinstance(result, dict) or text is None or len(text) > MAX_ACTION_RESULT_BYTES:
        st.auditor.record("plugin.action", "invalid", reason="invalid-output", **audit)
        raise ApiProblem(502, ProblemType.PLUGIN_FAILED, "Plugin action failed",
                         "The action returned something other than a JSON object of at most "
                         "1 MiB.")
    st.auditor.record("plugin.action", "ok", duration_ms=round(ms, 2),
                      code_bytes=len(text), **audit)
    return Response(text, status=200, mimetype="application/json")
