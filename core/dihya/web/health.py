"""Health checks for load balancers and orchestrators; no token needed."""

from __future__ import annotations

import time

from flask import Blueprint, Response, current_app, jsonify

from dihya.gate.startup import pth_json, unacknowledged
from dihya.store.faults import RETRY_AFTER_S

health = Blueprint("health", __name__)


@health.get("/healthz")
def healthz() -> Response:
    """Alive: the process answers."""
    return jsonify({"status": "ok"})


@health.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Ready when a generation would succeed: the config file on disk is the one in use,
    the registry is built, the store takes a committed write (not just a read), the audit
    commits are neither stuck nor backed up nor failing, and every approved sandboxed
    plugin's worker can start. Each failing check says why: `config_problem`,
    `store_problem`, `audit.problem`, `sandbox.failed`. A config file that is missing,
    unreadable, empty, invalid or lost every approval fails the config check while the last
    good config keeps serving."""
    state = current_app.extensions["dihya"]
    store_problem = state.store_status()
    snapshot = state.snapshot() if store_problem is None else state.current_snapshot()
    audit = state.audit_status()
    config_problem = state.config_status()
    records = snapshot.records if snapshot else ()
    # an approved sandbox-mode plugin whose worker cannot start (no isolation it may run
    # with, e.g. a root backend with no unprivileged user and no `[sandbox] allow_root`)
    unstartable = sorted(r.name for r in records if r.reason == "sandbox-start-failed")
    checks = {"config": config_problem is None, "registry": snapshot is not None,
              "store": store_problem is None, "audit": bool(audit["ok"]),
              "sandbox": not unstartable}
    ready = all(checks.values())
    body = {"status": "ok" if ready else "unavailable", "checks": checks,
            "config_problem": config_problem, "store_problem": store_problem,
            "audit": audit,
            "plugins_active": len(snapshot.active) if snapshot else 0,
            # which change this worker has caught up with, and since when: compare across
            # workers and nodes to see a reload or a switch propagate
            "state_version": state.version,
            "registry_age_s": round(max(0.0, time.time() - snapshot.built_at), 3) if snapshot
            else None,
            "sandbox": {"failed": unstartable,
                        "worker_users": sorted({r.worker_user for r in records
                                                if r.active and r.worker_user})},
            # code that runs at interpreter start, as of the last build: names and hashes,
            # not directories (this route needs no token); `plugins verify` has the paths.
            # Not a readiness check: an unacknowledged file is for the operator to review.
            "pth": pth_json(snapshot.pth, with_path=False) if snapshot else [],
            "pth_unacknowledged": len(unacknowledged(snapshot.pth)) if snapshot else 0}
    response = jsonify(body)
    if not ready:
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response, 200 if ready else 503
