"""Who may see and do what in the console: the session, the role, CSRF, and page rendering.

Every console view is wrapped by `page(role)`: it needs a live session (else the sign-in
page, or 401 for the poll endpoints), on POST a CSRF token that matches the session's and
no cross-site fetch metadata, and a role of at least `role` (`viewer` reads, `admin`
changes). Denials are audited as the API audits them (`acl.denied` with the reason
`needs-admin`; a bad CSRF token as `auth.failed`). The role is recorded on the view
(`console_role`) so a test can check every route.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any, Final, TypeVar

from flask import (
    current_app,
    g,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.wrappers import Response

from dihya.registry import RegistrySnapshot
from dihya.web.admin.sessions import ConsoleSession, SessionStore
from dihya.web.serverpaths import PathFilter, for_role
from dihya.web.state import DihyaState

COOKIE: Final = "dihya_console"
LOGIN_COOKIE: Final = "dihya_console_login"
COOKIE_PATH: Final = "/admin"
CSRF_FIELD: Final = "csrf_token"
CSRF_HEADER: Final = "X-CSRF-Token"
#: Fetch metadata a browser sends with a request that another site's page made
CROSS_SITE: Final = frozenset({"cross-site", "same-site"})
ROLE_RANK: Final = {"viewer": 0, "admin": 1}
_PATH: Final = re.compile(r"^/admin/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*$")

F = TypeVar("F", bound=Callable[..., Any])


class Denied(Exception):
    """Answer with an error page (HTML) of this status."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail


def state() -> DihyaState:
    st: DihyaState = current_app.extensions["dihya"]
    return st


def snapshot() -> RegistrySnapshot:
    """This worker's registry, caught up with the store and the config file first: a page
    shown right after a change (made here, by another worker or with the CLI) shows it,
    whichever worker serves the page. Costs one read of the state version when nothing
    changed."""
    return state().refresh(request_id())


def sessions() -> SessionStore:
    found: SessionStore = current_app.extensions["dihya.console.sessions"]
    return found


def current() -> ConsoleSession:
    """The session of this request (inside a `page` view)."""
    session: ConsoleSession = g.console
    return session


def paths() -> PathFilter:
    """How this session may see the server's paths: whole for an admin, file names for a
    viewer (`dihya.web.serverpaths`)."""
    return for_role(current().role, state().config_path)


def request_id() -> str | None:
    value: str | None = g.get("request_id")
    return value


def secure() -> bool:
    """Whether cookies get `Secure`: the request came over HTTPS, as the WSGI server
    says (gunicorn believes `X-Forwarded-Proto` only from `forwarded_allow_ips`)."""
    return request.is_secure


def set_cookie(response: Response, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(name, value, max_age=max_age, path=COOKIE_PATH, secure=secure(),
                        httponly=True, samesite="Strict")


def clear_cookie(response: Response, name: str) -> None:
    response.delete_cookie(name, path=COOKIE_PATH, secure=secure(), httponly=True,
                           samesite="Strict")


def safe_path(value: str | None) -> str | None:
    """`value` if it is a path of this console (where to go back to), else None: never
    another site (`//host`, `/\\host`) nor a scheme."""
    if value and _PATH.match(value) and "//" not in value:
        return value
    return None


def cross_site() -> bool:
    """True when the browser says another site (or another origin of this site) made the
    request: `Sec-Fetch-Site` is sent by every current browser and cannot be set by a page."""
    return request.headers.get("Sec-Fetch-Site", "").lower() in CROSS_SITE


def check_form(session: ConsoleSession) -> None:
    """A state change must come from one of this session's own pages."""
    token = request.form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
    if cross_site() or not session.csrf_ok(token):
        state().auditor.record("auth.failed", "denied", subject=session.token.name,
                               role=session.role, reason="csrf", request_id=request_id())
        raise Denied(403, "Refused: not sent from this console",
                     "This change did not come from a page of your console session (its "
                     "security token is missing or wrong, or another site sent it). Nothing "
                     "was changed. Open the page again and retry.")


def page(role: str = "viewer", *, poll: bool = False) -> Callable[[F], F]:
    """Console view decorator: a live session, CSRF on POST, and at least `role`.

    `poll`: a background refresh (JSON, 401 when signed out) that does not count as
    activity, so an open tab does not keep a session alive forever.
    """
    assert role in ROLE_RANK

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            session = sessions().find(request.cookies.get(COOKIE), touch=not poll)
            if session is None:
                return _signed_out(poll)
            g.console = session
            if request.method == "POST":
                check_form(session)
            if ROLE_RANK[session.role] < ROLE_RANK[role]:
                state().auditor.record("acl.denied", "denied", subject=session.token.name,
                                       role=session.role, reason=f"needs-{role}",
                                       request_id=request_id())
                raise Denied(403, "Not allowed with your role",
                             f"This needs the role `{role}`; you signed in with a "
                             f"`{session.role}` token. Nothing was changed.")
            return view(*args, **kwargs)

        wrapper.console_role = role  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def public(view: F) -> F:
    """Mark a console view that needs no session (the sign-in form)."""
    view.console_role = None  # type: ignore[attr-defined]
    return view


def _signed_out(poll: bool) -> Response:
    if poll:
        response = jsonify({"signed_in": False, "login": url_for("console.login")})
        response.status_code = 401
        return response
    if request.method == "GET":
        where = request.full_path.rstrip("?")
        ended: dict[str, Any] = {"m": "expired"} if request.cookies.get(COOKIE) else {}
        return redirect(url_for("console.login", next=where, **ended), code=303)
    raise Denied(401, "Signed out", "Your console session ended (signed out, idle for too "
                 "long, or its token was revoked). Nothing was changed. Sign in again.")


def render(template: str, status: int = 200, **context: Any) -> Response:
    """A console page with the session's user, CSRF token and pending notice."""
    session: ConsoleSession | None = g.get("console")
    notice = None
    if session is not None and session.notice:
        notice = session.notice
        sessions().set_notice(session.key, None)
    body = render_template(f"admin/{template}", session=session, notice=notice,
                           csrf_field=CSRF_FIELD, **context)
    response = make_response(body, status)
    return response


def done(notice: str, endpoint: str, **values: Any) -> Response:
    """After a change: a notice for the next page, and a redirect to it (303)."""
    sessions().set_notice(current().key, notice)
    return redirect(url_for(endpoint, **values), code=303)
