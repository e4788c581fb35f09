"""The Flask backend: app factory, blueprints per concern, state in `app.extensions`.

`flask --app dihya.web run` serves it for development; `dihya serve` runs it under
gunicorn. The config path comes from the argument, else `DIHYA_CONFIG`, else
`./dihya.toml`.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Final

from flask import Flask, Response, g, request
from werkzeug.exceptions import RequestEntityTooLarge

from dihya.config import Config, resolve_path
from dihya.needs import MAX_NEEDS_BYTES
from dihya.web.admin import init_console
from dihya.web.api import PluginNameConverter, PluginPageConverter, api
from dihya.web.audit_api import audit_api
from dihya.web.auth import AUTH_FAILED_PER_MINUTE, FailureBudget
from dihya.web.health import health
from dihya.web.openapi import openapi
from dihya.web.problems import install_error_handlers
from dihya.web.ratelimit import init_rate_limits
from dihya.web.state import DihyaState

__all__ = ["create_app"]

_WITHOUT_STORE = frozenset({"health.healthz", "health.readyz", "openapi.document", "static",
                            None})


#: Set in the environ of a request whose chunked body went past the limit.
_TOO_LARGE: Final = "dihya.body_too_large"


class ChunkedBodyLimit:
    """WSGI middleware: a body without `Content-Length` (`Transfer-Encoding: chunked`, which
    the server ends itself: `wsgi.input_terminated`) is read here, up to one byte past
    `limit`, and handed on with its length. Werkzeug alone reads such a body only up to
    `MAX_CONTENT_LENGTH` and hands back what it read, so a larger one was taken cut short
    (a console form's last fields dropped, JSON padded past 1 MiB accepted); one past the
    limit is marked, and answered 413 by the app (`_refuse_too_large`), whatever the route."""

    def __init__(self, app: Callable[..., Iterable[bytes]], limit: int) -> None:
        self.app = app
        self.limit = limit

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        # as Werkzeug: `chunked` means no length, whatever `Content-Length` says
        if environ.get("wsgi.input_terminated") \
                and "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            stream, body = environ["wsgi.input"], bytearray()
            while len(body) <= self.limit:
                part = stream.read(min(65536, self.limit + 1 - len(body)))
                if not part:
                    break
                body += part
            if len(body) > self.limit:
                environ[_TOO_LARGE] = True
                body.clear()
            environ["wsgi.input"] = io.BytesIO(bytes(body))
            environ["CONTENT_LENGTH"] = str(len(body))
            del environ["HTTP_TRANSFER_ENCODING"]  # the body is now read, with its length
        return self.app(environ, start_response)


def create_app(config_path: str | os.PathLike[str] | None = None, *,
               background_reload: bool = False, boot_config: Config | None = None,
               create_store: bool = True, **overrides: Any) -> Flask:
    """Build a backend app for the config at `config_path`. `boot_config`: the config to
    take the settings from (nothing approved) if the file cannot be used now, as
    `dihya serve` gives its workers; without it such a file is an error. `create_store`:
    create the state store if there is none and none was there before (the store
    marker); `dihya serve` workers never do (the command did, before starting them)."""
    app = Flask("dihya.web")
    state = DihyaState(resolve_path(config_path), background=background_reload,
                       boot_config=boot_config, create_store=create_store)
    app.extensions["dihya"] = state
    app.config.update(MAX_CONTENT_LENGTH=MAX_NEEDS_BYTES, JSON_SORT_KEYS=False,
                      RATELIMIT_HEADERS_ENABLED=True,
                      RATELIMIT_STORAGE_URI=state.config.rate_limit_storage,
                      # a shared storage (Redis) that cannot be reached: each worker counts
                      # for itself meanwhile (limits per worker) instead of answering 500
                      RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=True,
                      DIHYA_RATE_LIMIT=state.config.rate_limit)
    app.config.update(overrides)
    app.extensions["dihya.auth_failures"] = FailureBudget(
        int(app.config.get("DIHYA_AUTH_FAILED_PER_MINUTE", AUTH_FAILED_PER_MINUTE)),
        float(app.config.get("DIHYA_AUTH_FAILED_WINDOW_S", 60.0)))
    init_rate_limits(app)

    @app.before_request
    def _request_id() -> None:
        g.request_id = uuid.uuid4().hex

    @app.before_request
    def _refuse_too_large() -> None:
        if request.environ.get(_TOO_LARGE):
            raise RequestEntityTooLarge()

    @app.before_request
    def _store_first() -> None:
        # fail closed: no call but the health checks and the OpenAPI document is served
        # by a worker that has not got its store (503, see problems.store_unavailable)
        if request.endpoint not in _WITHOUT_STORE:
            state.require_store()

    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers["X-Request-Id"] = g.get("request_id", "")
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    install_error_handlers(app)
    app.url_map.converters["plugin"] = PluginNameConverter
    app.url_map.converters["plugin_page"] = PluginPageConverter
    app.register_blueprint(health)
    app.register_blueprint(openapi)
    app.register_blueprint(api)
    app.register_blueprint(audit_api)
    init_console(app)  # the operator console, /admin
    app.wsgi_app = ChunkedBodyLimit(app.wsgi_app, MAX_NEEDS_BYTES)  # type: ignore[method-assign]

    return app
