"""The health page: what `/readyz` and each plugin's isolation say, in words, with what to
do about each problem. It asks `/readyz`'s own view, so it shows every check that view
makes (checks added later included, by their name)."""

from __future__ import annotations

from typing import Any

from werkzeug.wrappers import Response

from dihya.web.admin import guard
from dihya.web.admin.blueprint import console
from dihya.web.admin.plugin_pages import plugin_view
from dihya.web.admin.words import HEALTH_CHECKS
from dihya.web.health import readyz

_KNOWN = frozenset({"status", "checks", "plugins_active", "state_version", "registry_age_s",
                    "sandbox"})


@console.get("/health")
@guard.page("viewer")
def health() -> Response:
    answer, status = readyz()
    ready: dict[str, Any] = answer.get_json()
    checks = []
    for name, ok in ready.get("checks", {}).items():
        what, good, advice = HEALTH_CHECKS.get(
            name, (f"Check `{name}`", "passes.", "See the operator guide and /readyz."))
        checks.append({"name": name, "ok": bool(ok), "what": what, "good": good,
                       "advice": advice})
    paths = guard.paths()
    plugins = [plugin_view(r, paths) for r in guard.snapshot().records]
    isolated = [p for p in plugins if p["warnings"] or p["status"] == "active"]
    other = {k: v for k, v in ready.items() if k not in _KNOWN}
    return guard.render("health.html", ready=ready, http_status=status, checks=checks,
                        plugins=isolated, other=other,
                        sandbox=ready.get("sandbox", {}))
