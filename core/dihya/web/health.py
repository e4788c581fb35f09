"""Health checks for load balancers and orchestrators; no token needed."""

from __future__ import annotations

import time

from flask import Blueprint, Response, current_app, jsonify

from dihya.startup import pth_json, unacknowledged

health = Blueprint("health", __name__)


@health.get("/healthz")
def healthz() -> Response:
    """Alive: the process answers."""
    return jsonify({"status": "ok"})


@health.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Ready: config loaded, registry built, store reachable; and the state version this
    worker's registry was built for."""
    state = current_app.extensions["dihya"]
    snapshot = state.snapshot()
    store_ok = state.store.ping()
    checks = {"config": True, "registry": snapshot is not None, "store": store_ok}
    ready = all(checks.values())
    body = {"status": "ok" if ready else "unavailable", "checks": checks,
            "plugins_active": len(snapshot.active) if snapshot else 0,
            # which change this worker has caught up with, and since when: compare across
            # workers and nodes to see a reload or a switch propagate
            "state_version": state.version,
            "registry_age_s": round(max(0.0, time.time() - snapshot.built_at), 3),
            # code that runs at interpreter start, as of the last build: names and hashes,
            # not directories (this route needs no token); `plugins verify` has the paths.
            # Not a readiness check: an unacknowledged file is for the operator to review.
            "pth": pth_json(snapshot.pth, with_path=False),
            "pth_unacknowledged": len(unacknowledged(snapshot.pth))}
    return jsonify(body), 200 if ready else 503
