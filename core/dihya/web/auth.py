"""Bearer-token authentication and role checks for every API route.

Roles are ordered: `viewer` lists plugins, `developer` also generates and calls plugin
actions, `admin` does everything. Failures are audited without the token.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Final, TypeVar

from flask import current_app, g, request

from dihya.reasons import ProblemType
from dihya.store.tokens import EXPIRED, TokenInfo, check_token
from dihya.web.problems import ApiProblem

ROLE_RANK: Final = {"viewer": 0, "developer": 1, "admin": 2}
F = TypeVar("F", bound=Callable[..., Any])


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
    state().auditor.record("auth.failed", "denied", reason=reason, request_id=g.get("request_id"))
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
