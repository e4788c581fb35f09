"""The plugins list, one plugin's page, and the switches an admin flips there.

The switches call `dihya.web.operations`, the functions behind the JSON API's routes, so a
disable from the console is recorded exactly as `POST /api/v1/plugins/<name>/disable`.
The list and the plugin's status are also served as HTML fragments under `/admin/live/`
(with an ETag): the page's script polls them every second and swaps in what changed, so
a change made elsewhere (CLI, another worker, another node) shows without a reload.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final

from flask import jsonify, redirect, render_template, request, url_for
from markupsafe import Markup
from werkzeug.wrappers import Response

from dihya.audit.query import AuditFilter, search
from dihya.gate.decide import PluginNotFound, dependency_problems, find_installed, inspect_files
from dihya.reasons import Reason
from dihya.registry import PluginRecord
from dihya.store.filelists import list_files
from dihya.store.pluginlogs import read as read_plugin_logs
from dihya.web import operations
from dihya.web.admin import guard
from dihya.web.admin.blueprint import console
from dihya.web.admin.words import STATUS_WORDS, reason_advice, reason_words, warning_advice
from dihya.web.problems import ApiProblem
from dihya.web.serverpaths import PathFilter, keep_paths

MAX_REASON: Final = 500  # as the API's DISABLE_BODY
LOG_LINES: Final = 50  # the newest log lines a plugin page shows
APPROVABLE: Final = frozenset({Reason.NOT_ALLOWLISTED, Reason.FINGERPRINT_MISMATCH,
                               Reason.VERSION_MISMATCH, Reason.DISTRIBUTION_MISMATCH,
                               Reason.UNSAFE_IN_PROCESS})


def plugin_view(r: PluginRecord, paths: PathFilter = keep_paths) -> dict[str, Any]:
    """What the pages show about one plugin; its free texts passed through `paths` (the
    session's: `guard.paths`)."""
    return {
        "name": r.name, "status": r.status, "status_words": STATUS_WORDS.get(r.status, r.status),
        "reason": r.reason, "reason_words": reason_words(r.reason),
        "advice": reason_advice(r.reason), "message": paths(r.message), "mode": r.mode,
        "roles": "every role" if r.roles is None else ", ".join(r.roles) or "no role",
        "version": r.version, "distribution": r.distribution, "entry_point": r.value,
        "fingerprint": r.fingerprint, "approved_fingerprint": r.approved_fingerprint,
        "changed": bool(r.approved_fingerprint and r.fingerprint
                        and r.fingerprint != r.approved_fingerprint),
        "quarantined": r.reason == Reason.QUARANTINED, "worker_user": r.worker_user,
        "isolation": list(r.isolation),
        "warnings": [(paths(w), warning_advice(w)) for w in r.warnings]
        + [(layer, warning_advice(layer)) for layer in r.isolation if layer.startswith("none")],
        "hooks": list(r.hooks), "actions": [a.to_json() for a in r.actions.values()],
        "required": r.required, "priority": r.priority, "safe": r.safe,
        "description": r.description, "author": r.author,
        "approvable": r.status == "refused" and r.reason in APPROVABLE,
        "switchable": r.reason not in (Reason.DISABLED_BY_CONFIG, Reason.DISABLED_BY_ENV),
    }


def _listing(status: str | None) -> dict[str, Any]:
    snapshot = guard.snapshot()
    records = snapshot.records
    counts = {s: sum(r.status == s for r in records) for s in STATUS_WORDS}
    paths = guard.paths()
    shown = [plugin_view(r, paths) for r in records if status is None or r.status == status]
    return {"rows": shown, "counts": counts, "total": len(records), "status": status,
            "state_version": guard.state().version}


def _status_filter() -> str | None:
    value = request.args.get("status") or None
    return value if value in STATUS_WORDS else None


def fragment(template: str, **context: Any) -> tuple[Markup, str]:
    """A live part of a page and its ETag: the page embeds both, so its script asks only
    for what changed since the page was rendered."""
    html = render_template(f"admin/{template}", session=guard.current(), **context)
    return Markup(html), hashlib.sha256(html.encode("utf-8")).hexdigest()[:32]


def _live(template: str, **context: Any) -> Response:
    """A live part of a page for the page's script; 304 if it did not change."""
    html, etag = fragment(template, **context)
    if request.if_none_match.contains(etag):
        response = Response(status=304)
    else:
        response = jsonify({"html": str(html), "state_version": guard.state().version})
    response.set_etag(etag)
    return response


@console.get("/plugins")
@guard.page("viewer")
def plugins() -> Response:
    """Every discovered plugin, filtered by status, with counts."""
    listing = _listing(_status_filter())
    live, etag = fragment("_plugins_table.html", **listing)
    return guard.render("plugins.html", live=live, live_etag=etag, **listing)


@console.get("/live/plugins")
@guard.page("viewer", poll=True)
def live_plugins() -> Response:
    return _live("_plugins_table.html", **_listing(_status_filter()))


def _record(name: str) -> PluginRecord:
    record = guard.snapshot().get(name)
    if record is None:
        raise guard.Denied(404, "No such plugin", "No installed plugin has this name; the "
                           "plugins page lists them.")
    return record


@console.get("/plugins/<plugin_page:name>")
@guard.page("viewer")
def plugin(name: str) -> Response:
    """One plugin: status, isolation, hooks and actions, dependencies, files, events."""
    st = guard.state()
    record = _record(name)
    try:
        found = [find_installed(name, st.config.group)]
    except PluginNotFound as exc:  # not installed (any more), or several of that name
        found = list(exc.matches)
    problems: list[str] = []
    files = None
    file_problem = None
    paths = guard.paths()
    if found:
        problems = [paths(p) for p in dependency_problems(found[0])]
        installed, problem = inspect_files(found[0])
        files = list_files(found[0], installed) if installed is not None else None
        file_problem = (problem[0], paths(problem[1])) if problem is not None else None
    events = None
    log_lines = None
    if guard.current().is_admin:
        events = search(st.auditor.log, AuditFilter(plugin=name), limit=20) \
            if st.auditor.log is not None else None
        log_lines = read_plugin_logs(st.store, name, limit=LOG_LINES)
    view = plugin_view(record, paths)
    live, etag = fragment("_plugin_status.html", p=view, max_reason=MAX_REASON)
    return guard.render("plugin.html", p=view, live=live, live_etag=etag,
                        dependency_problems=problems,
                        files=files, file_problem=file_problem, duplicates=len(found) > 1,
                        events=events, log_lines=log_lines, max_reason=MAX_REASON)


@console.get("/live/plugins/<plugin_page:name>")
@guard.page("viewer", poll=True)
def live_plugin(name: str) -> Response:
    return _live("_plugin_status.html", p=plugin_view(_record(name), guard.paths()),
                 max_reason=MAX_REASON)


def _operation_failed(exc: ApiProblem) -> guard.Denied:
    return guard.Denied(exc.status, exc.title, exc.detail)


@console.post("/plugins/<plugin:name>/disable")
@guard.page("admin")
def disable(name: str) -> Response:
    """Switch a plugin off at once, on every worker (as the API's disable)."""
    _record(name)
    reason = request.form.get("reason", "").strip() or None
    if reason is not None and len(reason) > MAX_REASON:
        raise guard.Denied(422, "Reason too long",
                           f"Write the reason in at most {MAX_REASON} characters.")
    session = guard.current()
    try:
        operations.disable_plugin(guard.state(), session.token, name, reason,
                                  guard.request_id())
    except ApiProblem as exc:
        raise _operation_failed(exc) from exc
    return guard.done(f"Disabled {name}.", "console.plugin", name=name)


@console.post("/plugins/<plugin:name>/enable")
@guard.page("admin")
def enable(name: str) -> Response:
    """Lift an admin switch (as the API's enable)."""
    try:
        operations.enable_plugin(guard.state(), guard.current().token, name,
                                 guard.request_id())
    except ApiProblem as exc:
        raise _operation_failed(exc) from exc
    return guard.done(f"Enabled {name}.", "console.plugin", name=name)


@console.post("/plugins/<plugin:name>/reset-quarantine")
@guard.page("admin")
def reset_quarantine(name: str) -> Response:
    """Lift a quarantine: the API's enable, offered only for a quarantined plugin."""
    if _record(name).reason != "quarantined":
        raise guard.Denied(409, "Not quarantined", "This plugin is not quarantined (any "
                           "more); nothing was changed.")
    try:
        operations.enable_plugin(guard.state(), guard.current().token, name,
                                 guard.request_id())
    except ApiProblem as exc:
        raise _operation_failed(exc) from exc
    return guard.done(f"Quarantine of {name} lifted: it runs again.", "console.plugin",
                      name=name)


@console.post("/plugins/reload")
@guard.page("admin")
def reload() -> Response:
    """Rebuild the registry on every worker and node sharing the store (as the API's)."""
    snapshot = operations.reload_plugins(guard.state(), guard.request_id())
    active = len(snapshot.active)
    guard.sessions().set_notice(guard.current().key,
                                f"Reloaded: {active} active plugin{'s' * (active != 1)}.")
    back = guard.safe_path(request.form.get("back")) or url_for("console.plugins")
    return redirect(back, code=303)


def json_text(value: Any) -> str:
    """An action's input schema, readable."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


console.add_app_template_filter(json_text, "json_text")
