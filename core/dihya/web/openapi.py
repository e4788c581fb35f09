"""The OpenAPI 3.1 document of the HTTP API, served at `/openapi.json`."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

openapi = Blueprint("openapi", __name__)


def openapi_document() -> dict[str, Any]:
    """Placeholder replaced by the full document (routes, schemas, errors, security)."""
    return {"openapi": "3.1.0", "info": {"title": "Dihya", "version": "0.1.0"}, "paths": {}}


@openapi.get("/openapi.json")
def document() -> Response:
    return jsonify(openapi_document())
