"""Approving a refused plugin after reviewing exactly what would be approved.

`GET /admin/plugins/<name>/approve` shows what the approval would record (entry point,
distribution, version, fingerprint, file count, publisher) and, when an earlier approval's
files were recorded, which files were added, removed or changed since. The form carries
the fingerprint the operator saw; `POST` approves only if the installed files still hash
to it (`dihya.approval`), then audits `plugin.approved` as `dihya plugins approve` does,
with the admin as actor, and rebuilds this worker's registry (the others follow the config
file's change). `dihya.approval` (with the config writer and difflib) is imported by the
first approval page, not when the app starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import request
from werkzeug.wrappers import Response

from dihya.config import MODES, ROLES
from dihya.reasons import Reason
from dihya.store.filelists import remember
from dihya.web.admin import guard
from dihya.web.admin.blueprint import console
from dihya.web.admin.words import reason_advice, reason_words

if TYPE_CHECKING:
    from dihya.approval import ApprovalPlan


def _plan(name: str) -> ApprovalPlan:
    from dihya.approval import CannotApprove, plan_approval

    st = guard.state()
    try:
        return plan_approval(name, st.config, st.store)
    except CannotApprove as exc:
        raise guard.Denied(404, "No such plugin", f"{exc.message}; the plugins page lists "
                           "what is installed.") from exc


def _review(plan: ApprovalPlan, status: int = 200, error: str | None = None,
            **choices: Any) -> Response:
    record = guard.snapshot().get(plan.name)
    problem = plan.problem
    # refused because its class is not safe in-process: the way out is sandbox mode
    default_mode = ("sandbox" if record is not None and record.reason == Reason.UNSAFE_IN_PROCESS
                    else plan.default_mode)
    return guard.render(
        "approve.html", status, plan=plan, record=record, error=error, modes=MODES,
        roles=ROLES, problem_words=reason_words(problem[0]) if problem else None,
        problem_advice=reason_advice(problem[0]) if problem else None,
        mode=choices.get("mode", default_mode),
        chosen_roles=choices.get("roles", plan.default_roles or ROLES),
        required=choices.get("required", plan.default_required))


@console.get("/plugins/<plugin:name>/approve")
@guard.page("admin")
def review(name: str) -> Response:
    """What approving the installed plugin would record, and what changed."""
    return _review(_plan(name))


@console.post("/plugins/<plugin:name>/approve")
@guard.page("admin")
def confirm(name: str) -> Response:
    """Approve the reviewed files."""
    plan = _plan(name)
    mode = request.form.get("mode", "")
    roles = tuple(r for r in ROLES if r in request.form.getlist("roles"))
    required = request.form.get("required") == "on"
    choices = {"mode": mode, "roles": roles, "required": required}
    if mode not in MODES:
        return _review(plan, 422, "Choose where the plugin runs.", **choices)
    if not roles:
        return _review(plan, 422, "Choose at least one role it may run for.", **choices)
    from dihya.approval import CannotApprove, approve

    st, session = guard.state(), guard.current()
    try:
        entry = approve(plan, st.config, reviewed=request.form.get("fingerprint", ""),
                        mode=mode,  # type: ignore[arg-type]
                        roles=None if set(roles) == set(ROLES) else roles, required=required,
                        facts=st.store)
    except CannotApprove as exc:
        return _review(plan, 409, f"Not approved ({exc.reason}): {exc.message}", **choices)
    if plan.files is not None:  # the approved files, for the next version's diff
        remember(st.store, plan.files)
    st.auditor.record("plugin.approved", "ok", subject=session.token.name, role=session.role,
                      plugin=entry.name, plugin_version=entry.version,
                      plugin_fingerprint=entry.fingerprint, request_id=guard.request_id())
    # every worker sharing the store rebuilds before its next answer (read-your-writes)
    st.reload(guard.request_id())
    return guard.done(f"Approved {entry.name} {entry.version} ({entry.mode}).",
                      "console.plugin", name=name)
