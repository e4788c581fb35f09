"""Per-token rate limits: Flask-Limiter, configured from `app.config` as Flask extensions are.

`init_rate_limits(app)` gives the app its limiter (counting in `RATELIMIT_STORAGE_URI`);
a view marked `@per_token` (under `@require`, so the token is known) is limited to
`DIHYA_RATE_LIMIT` requests per token, counted per view. `create_app` fills both keys
from `[web] rate_limit_storage` and `[web] rate_limit`; an override passed to `create_app`
wins. The views live in module-level blueprints; only the limiter is per app.

`memory://` (the default) counts in `SweepingMemoryStorage`: limits' in-process storage,
except that expired counters are swept inline at most once a second instead of by a
`threading.Timer` that the stock storage starts again on nearly every request (a thread
start per request: ≈ 0.1 ms of CPU, several ms of latency on a busy machine).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, Final, TypeVar

from flask import Flask, current_app, g
from flask_limiter import Limiter
from limits.storage import MemoryStorage

F = TypeVar("F", bound=Callable[..., Any])

RATE_LIMIT_KEY: Final = "DIHYA_RATE_LIMIT"
_LIMITER: Final = "dihya.limiter"
_LIMITED_VIEWS: Final = "dihya.rate_limited_views"


#: How often `SweepingMemoryStorage` drops expired counters (seconds).
SWEEP_EVERY_S: Final = 1.0


class SweepingMemoryStorage(MemoryStorage):
    """limits' `memory://` storage without a timer thread per request: the expiry sweep
    runs inline, at most every `SWEEP_EVERY_S` (a counter past its window is dropped
    when read anyway; the sweep only bounds the memory of keys no longer used)."""

    STORAGE_SCHEME = ["dihya-memory"]  # noqa: RUF012 - limits reads it so

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False,
                 **options: str) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self._next_sweep = time.monotonic() + SWEEP_EVERY_S

    def _MemoryStorage__schedule_expiry(self) -> None:  # the parent's private hook
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_EVERY_S
            self._MemoryStorage__expire_events()  # type: ignore[attr-defined]


def storage_uri(configured: str) -> str:
    """The storage URI the limiter gets: `memory://` becomes `SweepingMemoryStorage`."""
    return "dihya-memory://" if configured.rstrip("/") in ("memory:", "memory") else configured


def init_rate_limits(app: Flask) -> Limiter:
    """Give `app` its limiter; `app.config` must hold `DIHYA_RATE_LIMIT`."""
    app.config["RATELIMIT_STORAGE_URI"] = storage_uri(
        app.config.get("RATELIMIT_STORAGE_URI") or "memory://")
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
