"""The Flask backend: app factory, blueprints per concern, state in `app.extensions`.

`flask --app dihya.web run` serves it for development; `dihya serve` runs it under
gunicorn. The config path comes from the argument, else `DIHYA_CONFIG`, else
`./dihya.toml`.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from flask import Flask, Response, g
from flask_limiter import Limiter

from dihya.config import Config, resolve_path
from dihya.needs import MAX_NEEDS_BYTES
from dihya.web.admin import init_console
from dihya.web.api import PluginNameConverter, make_api
from dihya.web.audit_api import audit_api
from dihya.web.health import health
from dihya.web.openapi import openapi
from dihya.web.problems import install_error_handlers
from dihya.web.state import DihyaState

__all__ = ["create_app"]


def create_app(config_path: str | os.PathLike[str] | None = None, *,
               background_reload: bool = False, boot_config: Config | None = None,
               **overrides: Any) -> Flask:
    """Build a backend app for the config at `config_path`. `boot_config`: the config to
    take the settings from (nothing approved) if the file cannot be used now, as
    `dihya serve` gives its workers; without it such a file is an error."""
    app = Flask("dihya.web")
    app.config.update(MAX_CONTENT_LENGTH=MAX_NEEDS_BYTES, JSON_SORT_KEYS=False,
                      RATELIMIT_HEADERS_ENABLED=True)
    app.config.update(overrides)
    state = DihyaState(resolve_path(config_path), background=background_reload,
                       boot_config=boot_config)
    app.extensions["dihya"] = state
    limiter = Limiter(key_func=lambda: "anonymous", app=app,
                      storage_uri=state.config.rate_limit_storage, default_limits=[],
                      headers_enabled=True)
    app.extensions["dihya.limiter"] = limiter

    @app.before_request
    def _request_id() -> None:
        g.request_id = uuid.uuid4().hex

    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers["X-Request-Id"] = g.get("request_id", "")
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    install_error_handlers(app)
    app.url_map.converters["plugin"] = PluginNameConverter
    app.register_blueprint(health)
    app.register_blueprint(openapi)
    app.register_blueprint(make_api(limiter, state.config.rate_limit))
    app.register_blueprint(audit_api)
    init_console(app)  # the operator console, /admin

    return app
