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

The limiter's own before-request check is left out when it has nothing to apply (no
default, application, blueprint or meta limit: the case here), as it then only cost time.

`memory://` counts in `ThreadlessMemoryStorage`: `limits`' own memory storage starts a
`threading.Timer` (a new thread) on most requests to drop expired counters; this one drops
them on access and sweeps the rest at most once a second, on the request that comes then.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any, Final, TypeVar

from flask import Flask, current_app, g
from flask_limiter import Limiter
from limits.storage import MemoryStorage

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
SWEEP_EVERY_S: Final = 1.0
THREADLESS_MEMORY: Final = "dihya-memory://"
_EXPIRE_EVENTS: Final = "_MemoryStorage__expire_events"  # the base's private sweep


class ThreadlessMemoryStorage(MemoryStorage):
    """`limits`' in-process storage without its expiry timer thread: a counter past its
    expiry is dropped when read (as `MemoryStorage.get` does), and every counter past its
    expiry at most once per `SWEEP_EVERY_S`, by the request that comes then."""

    STORAGE_SCHEME = ["dihya-memory"]  # noqa: RUF012 (as the base class declares it)

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False,
                 **options: str) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self.timer.cancel()  # the one the base class started: no expiry thread, ever
        self.timer.join()
        self._swept_at = time.monotonic()
        self._sweep_lock = threading.Lock()

    def _MemoryStorage__schedule_expiry(self) -> None:
        now = time.monotonic()
        if now - self._swept_at < SWEEP_EVERY_S or not self._sweep_lock.acquire(blocking=False):
            return
        try:
            self._swept_at = now
            getattr(self, _EXPIRE_EVENTS)()
        finally:
            self._sweep_lock.release()


def storage_uri(uri: str) -> str:
    """The storage `limits` is given for `[web] rate_limit_storage`: `memory://` is counted
    in `ThreadlessMemoryStorage`; any other URI as it is."""
    return THREADLESS_MEMORY if uri == "memory://" else uri


def limits_are_shared(config: Config) -> bool:
    """True when `[web] rate_limit_storage` is a storage every worker and node can share
    (Redis, Memcached...), False for the per-process `memory://` (limits per worker)."""
    scheme = config.rate_limit_storage.split("://", 1)[0].lower()
    return scheme not in PER_PROCESS_SCHEMES


def init_rate_limits(app: Flask) -> Limiter:
    """Give `app` its limiter; `app.config` must hold `DIHYA_RATE_LIMIT`."""
    app.config["RATELIMIT_STORAGE_URI"] = storage_uri(
        app.config.get("RATELIMIT_STORAGE_URI", "memory://"))
    limiter = Limiter(key_func=lambda: "anonymous", default_limits=[])
    limiter.init_app(app)
    if not _middleware_limits(limiter):
        # The limiter's check before every request applies default, application, blueprint
        # and meta limits; this app has none (a `per_token` view checks its own limit when
        # it is called), so that check counted nothing and cost 0.1-0.5 ms per request.
        hooks = app.before_request_funcs.get(None, [])
        if limiter._check_request_limit in hooks:
            hooks.remove(limiter._check_request_limit)
    app.extensions[_LIMITER] = limiter
    app.extensions[_LIMITED_VIEWS] = {}
    return limiter


def _middleware_limits(limiter: Limiter) -> bool:
    """Whether the limiter has a limit its before-request check would apply; True when
    this Flask-Limiter does not say (its private attributes read with `True` as default):
    the check then stays."""
    manager = limiter.limit_manager
    return any(bool(getattr(owner, name, True)) for owner, name in (
        (manager, "_default_limits"), (manager, "_application_limits"),
        (manager, "_blueprint_limits"), (limiter, "_meta_limits")))


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
