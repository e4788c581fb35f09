"""Health checks for load balancers and orchestrators; no token needed."""

from __future__ import annotations

import time

from flask import Blueprint, Response, current_app, jsonify

from dihya.gate.startup import pth_json, unacknowledged

health = Blueprint("health", __name__)


@health.get("/healthz")
def healthz() -> Response:
    """Alive: the process answers."""
    return jsonify({"status": "ok"})


@health.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Ready: the config file on disk is the one in use, registry built, store reachable;
    and the state version this worker's registry was built for. A config file that is
    missing, unreadable, empty, invalid or lost every approval fails the config check
    (`config_problem` says why) while the last good config keeps serving."""
    state = current_app.extensions["dihya"]
    snapshot = state.snapshot()
    store_ok = state.store.ping()
    config_problem = state.config_status()
    records = snapshot.records if snapshot else ()
    # an approved sandbox-mode plugin whose worker cannot start (no isolation it may run
    # with, e.g. a root backend with no unprivileged user and no `[sandbox] allow_root`)
    unstartable = sorted(r.name for r in records if r.reason == "sandbox-start-failed")
    checks = {"config": config_problem is None, "registry": snapshot is not None,
              "store": store_ok, "sandbox": not unstartable}
    ready = all(checks.values())
    body = {"status": "ok" if ready else "unavailable", "checks": checks,
            "config_problem": config_problem,
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
    return jsonify(body), 200 if ready else 503
