"""Per-token rate limits, counted with `limits` straight from the view, configured from
`app.config` as Flask extensions are.

`init_rate_limits(app)` gives the app its `TokenLimiter` (counting in
`RATELIMIT_STORAGE_URI`); a view marked `@per_token` (under `@require`, so the token is
known) is limited to `DIHYA_RATE_LIMIT` requests per token, counted per view. `create_app`
fills both keys from `[web] rate_limit` and `[web] rate_limit_storage`; an override passed
to `create_app` wins. The views live in module-level blueprints; only the limiter is per app.

With the default `memory://` storage every server worker process counts for itself: with
N workers on M nodes a token can make up to N x M times its limit. A shared storage
(Redis: `redis://host:6379`, which needs the `redis` client, `dihya-core[redis]`) makes the
limit exact across every worker and node; `limits_are_shared` tells which a config has
(`plugins verify` notes it, `dihya doctor` reuses it).

What a limited request gets is what Flask-Limiter (which counted here before, issue #16)
gave it, with the same `limits` storage, strategy and counter keys
(`LIMITER/[prefix/]token:<id>/<endpoint>/<amount>/<multiples>/<granularity>`, so servers
of either kind count into one limit in a shared storage): every request counts, before the
view runs; past the limit a 429 problem document (`problems.py`); on every answer of a
limited view `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` and
`Retry-After`; with `RATELIMIT_IN_MEMORY_FALLBACK_ENABLED` a storage that fails makes the
worker count in its own memory until the storage answers again (checked after 1, 2, 4...
32 s, then from 1 s again). Flask-Limiter's generic path (limit groups, exemptions, meta
and default limits resolved on every request, its context kept in `g`) cost ≈ 10 % of a
worker's CPU per generation; it is no longer used. Read from `app.config`:
`RATELIMIT_ENABLED`, `RATELIMIT_STORAGE_URI`, `RATELIMIT_STORAGE_OPTIONS`,
`RATELIMIT_STRATEGY`, `RATELIMIT_KEY_PREFIX`, `RATELIMIT_HEADERS_ENABLED`,
`RATELIMIT_IN_MEMORY_FALLBACK_ENABLED`; `DIHYA_RATE_LIMIT` may hold several limits
(`"10/second;100/hour"`): each counts, the first one exceeded (smallest window first) answers.

`memory://` counts in `ThreadlessMemoryStorage`: `limits`' own memory storage starts a
`threading.Timer` (a new thread) on most requests to drop expired counters; this one drops
them on access and sweeps the rest at most once a second, on the request that comes then.
The in-memory fallback counts in one too.
"""

from __future__ import annotations

import datetime
import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final, TypeVar

from flask import Flask, Response, current_app, g, request
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import STRATEGIES, RateLimiter
from werkzeug.http import parse_date

from dihya.config import Config
from dihya.reasons import ProblemType
from dihya.web.problems import RATE_LIMITED_DETAIL, ApiProblem

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("dihya.web")

RATE_LIMIT_KEY: Final = "DIHYA_RATE_LIMIT"
#: storage URI schemes whose counters live in one process (never shared between workers)
PER_PROCESS_SCHEMES: Final = frozenset({"memory"})
PER_WORKER_NOTE: Final = (
    "[web] rate_limit_storage is memory://: each server worker process counts for itself, "
    "so with N workers on M nodes a token can make up to N x M times [web] rate_limit. "
    "For an exact limit, point it at a Redis every worker and node reaches "
    "(rate_limit_storage = \"redis://127.0.0.1:6379\"; pip install 'dihya-core[redis]')")
_LIMITER: Final = "dihya.limiter"
SWEEP_EVERY_S: Final = 1.0
THREADLESS_MEMORY: Final = "dihya-memory://"
_EXPIRE_EVENTS: Final = "_MemoryStorage__expire_events"  # the base's private sweep
#: the longest wait between two checks of a failed storage is 2**MAX_BACKEND_CHECKS s
MAX_BACKEND_CHECKS: Final = 5
HEADER_LIMIT: Final = "X-RateLimit-Limit"
HEADER_REMAINING: Final = "X-RateLimit-Remaining"
HEADER_RESET: Final = "X-RateLimit-Reset"
HEADER_RETRY_AFTER: Final = "Retry-After"
#: `g`'s name for the limit a request was counted against: (item, identifiers)
_COUNTED: Final = "dihya_rate_limit"


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


def limit_exceeded(item: RateLimitItem) -> ApiProblem:
    """429: the token used up `item` on this view. `Retry-After` is the limit's window
    (raised to the counter's reset by `TokenLimiter.add_headers` if that is later)."""
    return ApiProblem(429, ProblemType.RATE_LIMITED, "Too Many Requests", RATE_LIMITED_DETAIL,
                      headers={HEADER_RETRY_AFTER: str(max(1, int(item.get_expiry())))})


def storage_uri(uri: str) -> str:
    """The storage `limits` is given for `[web] rate_limit_storage`: `memory://` is counted
    in `ThreadlessMemoryStorage`; any other URI as it is."""
    return THREADLESS_MEMORY if uri == "memory://" else uri


def limits_are_shared(config: Config) -> bool:
    """True when `[web] rate_limit_storage` is a storage every worker and node can share
    (Redis, Memcached...), False for the per-process `memory://` (limits per worker)."""
    scheme = config.rate_limit_storage.split("://", 1)[0].lower()
    return scheme not in PER_PROCESS_SCHEMES


class TokenLimiter:
    """One app's per-token limits: the parsed limits, the strategy over the storage, the
    in-memory fallback and whether the storage is taken for dead."""

    def __init__(self, app: Flask) -> None:
        config = app.config
        self.enabled = bool(config.setdefault("RATELIMIT_ENABLED", True))
        self.storage: Storage = storage_from_string(  # type: ignore[assignment]
            storage_uri(config.get("RATELIMIT_STORAGE_URI") or "memory://"),
            **config.get("RATELIMIT_STORAGE_OPTIONS", {}))
        strategy = STRATEGIES[config.setdefault("RATELIMIT_STRATEGY", "fixed-window")]
        self.limiter: RateLimiter = strategy(self.storage)
        self.fallback: RateLimiter | None = (
            strategy(ThreadlessMemoryStorage(THREADLESS_MEMORY))
            if config.get("RATELIMIT_IN_MEMORY_FALLBACK_ENABLED") else None)
        self.headers = bool(config.get("RATELIMIT_HEADERS_ENABLED", False))
        self.prefix: str = config.get("RATELIMIT_KEY_PREFIX", "")
        # the smallest window first: counted in that order, the first one exceeded answers
        self.items: list[RateLimitItem] = sorted(parse_many(config[RATE_LIMIT_KEY]))
        self.dead = False
        self._checks = 0
        self._checked_at = 0.0

    def current(self) -> RateLimiter:
        """The strategy counting now: over the storage, or over the fallback while the
        storage is taken for dead."""
        return self.fallback if self.dead and self.fallback is not None else self.limiter

    def _revive(self) -> None:
        """While the storage is taken for dead, ask it again after 1, 2, 4... seconds."""
        if self._checks > MAX_BACKEND_CHECKS:
            self._checks = 0
        now = time.time()
        if now - self._checked_at > 2 ** self._checks:
            self._checked_at = now
            self._checks += 1
            if self.storage.check():
                log.info("rate limit storage recovered")
                self.dead = False
                self._checks = 0

    def _fail_over(self, exc: Exception) -> None:
        """The storage failed: count in memory from now on if the fallback is enabled,
        else let the error through."""
        if self.fallback is None or self.dead:
            raise exc
        log.warning("rate limit storage unreachable: counting in this worker's memory "
                    "(%s)", type(exc).__name__)
        self.dead = True

    def count(self, endpoint: str, token_id: str) -> None:
        """Count this request against every limit of `endpoint` for the token, in order;
        raise a 429 `ApiProblem` at the first one exceeded."""
        identifiers = ((self.prefix,) if self.prefix else ()) + (f"token:{token_id}", endpoint)
        if self.dead and self.fallback is not None:
            self._revive()
        try:
            self._hit(identifiers)
        except ApiProblem:
            raise
        except Exception as exc:
            self._fail_over(exc)
            self._hit(identifiers)

    def _hit(self, identifiers: tuple[str, ...]) -> None:
        limiter = self.current()
        for item in self.items:
            if not limiter.hit(item, *identifiers):
                setattr(g, _COUNTED, (item, identifiers))
                raise limit_exceeded(item)
        # the headers tell of the smallest window unless one was exceeded
        setattr(g, _COUNTED, (self.items[0], identifiers) if self.items else None)

    def add_headers(self, response: Response) -> Response:
        """`X-RateLimit-*` and `Retry-After` on the answer of a counted request."""
        counted = g.get(_COUNTED)
        if counted is None or not self.headers:
            return response
        item, identifiers = counted
        try:
            reset, remaining = self.current().get_window_stats(item, *identifiers)
        except Exception as exc:
            self._fail_over(exc)
            return self.add_headers(response)
        reset_at = int(reset + 1)
        headers = response.headers
        headers.add(HEADER_LIMIT, str(item.amount))
        headers.add(HEADER_REMAINING, str(remaining))
        headers.add(HEADER_RESET, str(reset_at))
        given = headers.get(HEADER_RETRY_AFTER)
        if given is not None:  # the later of the answer's own and the counter's reset
            when = parse_date(given)
            retry_at = (time.mktime(when.timetuple()) if isinstance(when, datetime.datetime)
                        else time.time() + int(given))
            reset_at = max(int(retry_at), reset_at)
        headers.set(HEADER_RETRY_AFTER, str(int(reset_at - time.time())))
        return response


def init_rate_limits(app: Flask) -> TokenLimiter:
    """Give `app` its limiter; `app.config` must hold `DIHYA_RATE_LIMIT`."""
    limiter = TokenLimiter(app)
    app.extensions[_LIMITER] = limiter
    if limiter.enabled:
        app.after_request(limiter.add_headers)
    return limiter


def per_token(view: F) -> F:
    """Limit `view` to the app's `DIHYA_RATE_LIMIT` per token (429 with Retry-After)."""

    @functools.wraps(view)
    def limited(*args: Any, **kwargs: Any) -> Any:
        limiter: TokenLimiter = current_app.extensions[_LIMITER]
        endpoint = request.endpoint
        if limiter.enabled and endpoint:
            limiter.count(endpoint, g.token.id)
        return view(*args, **kwargs)

    return limited  # type: ignore[return-value]
