"""Per-token rate limits: Flask-Limiter, configured from `app.config` as Flask extensions are.

`init_rate_limits(app)` gives the app its limiter (counting in `RATELIMIT_STORAGE_URI`);
a view marked `@per_token` (under `@require`, so the token is known) is limited to
`DIHYA_RATE_LIMIT` requests per token, counted per view. `create_app` fills both keys
from `[web] rate_limit_storage` and `[web] rate_limit`; an override passed to `create_app`
wins. The views live in module-level blueprints; only the limiter is per app.

With the default `memory://` storage every server worker process counts for itself: with
N workers on M nodes a token can make up to N x M times its limit. A shared storage
(Redis: `redis://host:6379`, which needs the `redis` client, `dihya-core[redis]`) makes the
limit exact across every worker and node; `limits_are_shared` tells which a config has
(`plugins verify` notes it, `dihya doctor` reuses it).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Final, TypeVar

from flask import Flask, current_app, g
from flask_limiter import Limiter

from dihya.config import Config

F = TypeVar("F", bound=Callable[..., Any])

RATE_LIMIT_KEY: Final = "DIHYA_RATE_LIMIT"
#: storage URI schemes whose counters live in one process (never shared between workers)
PER_PROCESS_SCHEMES: Final = frozenset({"memory"})
PER_WORKER_NOTE: Final = (
    "[web] rate_limit_storage is memory://: each server worker process counts for itself, "
    "so with N workers on M nodes a token can make up to N x M times [web] rate_limit. "
    "For an exact limit, point it at a Redis every worker and node reaches "
    "(rate_limit_storage = \"redis://127.0.0.1:6379\"; pip install 'dihya-core[redis]')")
_LIMITER: Final = "dihya.limiter"
_LIMITED_VIEWS: Final = "dihya.rate_limited_views"


def limits_are_shared(config: Config) -> bool:
    """True when `[web] rate_limit_storage` is a storage every worker and node can share
    (Redis, Memcached...), False for the per-process `memory://` (limits per worker)."""
    scheme = config.rate_limit_storage.split("://", 1)[0].lower()
    return scheme not in PER_PROCESS_SCHEMES


def init_rate_limits(app: Flask) -> Limiter:
    """Give `app` its limiter; `app.config` must hold `DIHYA_RATE_LIMIT`."""
    limiter = Limiter(key_func=lambda: "anonymous", default_limits=[])
    limiter.init_app(app)
    app.extensions[_LIMITER] = limiter
    app.extensions[_LIMITED_VIEWS] = {}
    return limiter


def _token_key() -> str:
    return f"token:{g.token.id}"


def per_token(view: F) -> F:
    """Limit `view` to the app's `DIHYA_RATE_LIMIT` per token (429 with Retry-After)."""

    @functools.wraps(view)
    def limited(*args: Any, **kwargs: Any) -> Any:
        views: dict[Callable[..., Any], Callable[..., Any]] = \
            current_app.extensions[_LIMITED_VIEWS]
        bound = views.get(view)
        if bound is None:  # first call in this app: bind the view to the app's limiter
            limiter: Limiter = current_app.extensions[_LIMITER]
            bound = limiter.limit(current_app.config[RATE_LIMIT_KEY], key_func=_token_key)(view)
            views[view] = bound
        return bound(*args, **kwargs)

    return limited  # type: ignore[return-value]
