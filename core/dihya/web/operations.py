"""What an admin does to plugins over HTTP, shared by the JSON API and the operator console.

One function per operation: it checks what the state allows, changes the store, rebuilds
this worker's registry and audits the outcome, so both faces record exactly the same
events under the same rules. Refusals are `ApiProblem`s; the console words them as pages.
"""

from __future__ import annotations

from dihya.reasons import ProblemType, Reason
from dihya.registry import PluginRecord, RegistrySnapshot
from dihya.store.tokens import TokenInfo
from dihya.web.problems import ApiProblem
from dihya.web.state import DihyaState


def record_or_404(st: DihyaState, name: str, request_id: str | None = None) -> PluginRecord:
    """The plugin named `name` in the registry of the store's current state version
    (read-your-writes: `DihyaState.current`); 404 if none is installed."""
    record = st.current(request_id).get(name)
    if record is None:
        raise ApiProblem(404, ProblemType.UNKNOWN_PLUGIN, "Unknown plugin",
                         "No installed plugin has this name; GET /api/v1/plugins lists them.")
    return record


def disable_plugin(st: DihyaState, token: TokenInfo, name: str, reason: str | None,
                   request_id: str | None) -> PluginRecord:
    """Switch the plugin off on every worker sharing the store (`disabled-by-admin`)."""
    record_or_404(st, name)
    st.store.set_plugin_disabled(name, True, Reason.DISABLED_BY_ADMIN, reason,
                                 actor=st.auditor.pseudonym(token.name))
    record = st.refresh(request_id).get(name)
    st.auditor.record("plugin.disabled", "ok", subject=token.name, role=token.role,
                      plugin=name, request_id=request_id, reason=Reason.DISABLED_BY_ADMIN,
                      note=reason)
    assert record is not None
    return record


def enable_plugin(st: DihyaState, token: TokenInfo, name: str,
                  request_id: str | None) -> PluginRecord:
    """Lift an admin switch or a quarantine; 409 when the config file or the server's
    environment switched the plugin off (an admin switch cannot override those)."""
    record = record_or_404(st, name)
    if record.reason in (Reason.DISABLED_BY_CONFIG, Reason.DISABLED_BY_ENV):
        where = ("the config file (`dihya plugins enable`)" if record.reason ==
                 Reason.DISABLED_BY_CONFIG else "DIHYA_PLUGINS_DISABLE of the server's process")
        raise ApiProblem(409, ProblemType.CONFLICT, "Switched off elsewhere",
                         f"This plugin is switched off in {where}; an admin switch cannot "
                         "override it.")
    st.store.set_plugin_disabled(name, False, actor=st.auditor.pseudonym(token.name))
    after = st.refresh(request_id).get(name)
    st.auditor.record("plugin.enabled", "ok", subject=token.name, role=token.role,
                      plugin=name, request_id=request_id)
    assert after is not None
    return after


def reload_plugins(st: DihyaState, request_id: str | None) -> RegistrySnapshot:
    """Tell every worker sharing the store to rebuild its registry, and rebuild this one
    (audited by the rebuild as `registry.reloaded`)."""
    return st.reload(request_id)
