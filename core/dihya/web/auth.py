"""Bearer-token authentication and role checks for every API route.

Roles are ordered: `viewer` lists plugins, `developer` also generates and calls plugin
actions, `admin` does everything. Failures are audited without the token; requests without
a valid token are audited within a budget per worker (`FailureBudget`), so that anyone who
reaches the port cannot fill the audit log.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any, Final, TypeVar

from flask import current_app, g, request

from dihya.reasons import ProblemType
from dihya.store.tokens import EXPIRED, TokenInfo, check_token
from dihya.web.problems import ApiProblem

ROLE_RANK: Final = {"viewer": 0, "developer": 1, "admin": 2}
#: `auth.failed` events a worker records a minute at most (app config
#: `DIHYA_AUTH_FAILED_PER_MINUTE`, `DIHYA_AUTH_FAILED_WINDOW_S`)
AUTH_FAILED_PER_MINUTE: Final = 60
F = TypeVar("F", bound=Callable[..., Any])


class FailureBudget:
    """How many failed sign-ins (no token, an unknown, revoked or expired one) this worker
    still audits in the current window. Each used to write an `auth.failed` event, so an
    anonymous client could make the store commit hundreds of rows a second, kept for the
    retention period. Past the budget a failure is still refused, and counted: the next
    event recorded carries how many failures it stands for (`count`)."""

    def __init__(self, per_window: int = AUTH_FAILED_PER_MINUTE, window_s: float = 60.0):
        self.per_window = per_window
        self.window_s = window_s
        self._lock = threading.Lock()
        self._start = float("-inf")
        self._used = 0
        self._skipped = 0

    def take(self) -> int | None:
        """None: do not record this failure (it is counted); else how many failures the
        event to record stands for (1, or more after failures that were not recorded)."""
        now = time.monotonic()
        with self._lock:
            if now - self._start >= self.window_s:
                self._start, self._used = now, 0
            if self._used >= self.per_window:
                self._skipped += 1
                return None
            self._used += 1
            count, self._skipped = self._skipped + 1, 0
            return count


def record_auth_failure(reason: str, request_id: str | None) -> None:
    """Audit a failed sign-in (`auth.failed`), within this worker's budget."""
    budget: FailureBudget | None = current_app.extensions.get("dihya.auth_failures")
    count = budget.take() if budget is not None else 1
    if count is None:
        return
    fields: dict[str, Any] = {"count": count} if count > 1 else {}
    state().auditor.record("auth.failed", "denied", reason=reason, request_id=request_id,
                           **fields)


def state() -> Any:
    return current_app.extensions["dihya"]


def current_token() -> TokenInfo:
    token: TokenInfo = g.token
    return token


def _authenticate() -> TokenInfo:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        _deny_auth("missing-token", "Send `Authorization: Bearer <token>`; create a token with "
                   "`dihya tokens create`.")
    info, reason = check_token(state().store, value.strip())
    if reason == EXPIRED:
        _deny_auth(EXPIRED, "The bearer token has expired; ask an admin for a new one "
                   "(`dihya tokens rotate NAME` gives it a new secret).")
    if info is None:
        _deny_auth("invalid-token", "The bearer token is unknown or revoked.")
    assert info is not None
    return info


def _deny_auth(reason: str, detail: str) -> None:
    record_auth_failure(reason, g.get("request_id"))
    raise ApiProblem(401, ProblemType.UNAUTHORIZED, "Unauthorized", detail,
                     headers={"WWW-Authenticate": 'Bearer realm="dihya"'})


def required_role(view: Callable[..., Any]) -> str | None:
    """The role `view` was declared with by `@require`, None for a public view."""
    return getattr(view, "required_role", None)


def require(role: str) -> Callable[[F], F]:
    """Route decorator: a valid token whose role ranks at least `role` (the OpenAPI
    document reads it back with `required_role`, so the role is written only here)."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            info = _authenticate()
            g.token = info
            if ROLE_RANK[info.role] < ROLE_RANK[role]:
                state().auditor.record("acl.denied", "denied", subject=info.name, role=info.role,
                                       reason=f"needs-{role}", request_id=g.get("request_id"))
                raise ApiProblem(403, ProblemType.FORBIDDEN, "Forbidden",
                                 f"This needs the role `{role}`; your token's role is "
                                 f"`{info.role}`.")
            return view(*args, **kwargs)

        wrapper.required_role = role  # type: ignore[attr-defined]  # read by openapi
        return wrapper  # type: ignore[return-value]

    return decorate
