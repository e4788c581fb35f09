"""Signing in and out of the console with an API token.

`GET /admin/login` sets a one-off cookie and puts the same random value in the form's
hidden `csrf_token` input: a form posted from another site has neither (the cookie is
`SameSite=Strict`), so nobody can sign a victim in to the attacker's session. `POST
/admin/login` checks the token (`dihya.store.tokens.authenticate`, as the API does), refuses
`developer` tokens, and starts a fresh server-side session (a new id every time).
"""

from __future__ import annotations

import hmac
import secrets
from typing import Final

from flask import redirect, request, url_for
from werkzeug.wrappers import Response

from dihya.store.tokens import authenticate
from dihya.web.admin import guard
from dihya.web.admin.blueprint import console
from dihya.web.admin.sessions import CONSOLE_ROLES
from dihya.web.admin.words import STATUS_WORDS
from dihya.web.auth import record_auth_failure

LOGIN_COOKIE_AGE_S: Final = 3600

_MESSAGES: Final = {
    "signed-out": "You signed out.",
    "expired": "Your session ended. Sign in again.",
}


def _safe_next(value: str | None) -> str:
    """Where to go after signing in: a console path only, never another site."""
    path = guard.safe_path(value)
    if path is not None and not path.startswith("/admin/login"):
        return path
    return url_for("console.plugins")


def _form(status: int = 200, error: str | None = None) -> Response:
    value = secrets.token_urlsafe(32)
    response = guard.render("login.html", status, login_csrf=value, error=error,
                            next=_safe_next(request.values.get("next")),
                            message=_MESSAGES.get(request.args.get("m", "")),
                            status_words=STATUS_WORDS)
    guard.set_cookie(response, guard.LOGIN_COOKIE, value, LOGIN_COOKIE_AGE_S)
    return response


@console.route("/login", methods=["GET", "POST"])
@guard.public
def login() -> Response:
    """The sign-in form, and signing in."""
    if request.method == "GET":
        if guard.sessions().find(request.cookies.get(guard.COOKIE), touch=False) is not None:
            return redirect(_safe_next(request.args.get("next")), code=303)
        return _form()
    expected = request.cookies.get(guard.LOGIN_COOKIE, "")
    sent = request.form.get(guard.CSRF_FIELD, "")
    if guard.cross_site() or not expected or not hmac.compare_digest(
            expected.encode(), sent.encode("utf-8", "replace")):
        raise guard.Denied(403, "Sign-in refused", "This sign-in form expired or was sent "
                           "from another site. Open the sign-in page again.")
    st = guard.state()
    info = authenticate(st.store, request.form.get("token", "").strip())
    if info is None:
        record_auth_failure("invalid-token", guard.request_id())
        return _form(401, "This token is unknown or revoked.")
    if info.role not in CONSOLE_ROLES:
        st.auditor.record("acl.denied", "denied", subject=info.name, role=info.role,
                          reason="console-role", request_id=guard.request_id())
        return _form(403, f"A `{info.role}` token cannot sign in to the console: use an "
                     "`admin` or a `viewer` token.")
    session_id = guard.sessions().start(info)
    st.auditor.record("session.started", "ok", subject=info.name, role=info.role,
                      request_id=guard.request_id())
    response = redirect(_safe_next(request.form.get("next")), code=303)
    guard.set_cookie(response, guard.COOKIE, session_id, None)
    guard.clear_cookie(response, guard.LOGIN_COOKIE)
    return response


@console.post("/logout")
@guard.page("viewer")
def logout() -> Response:
    """End this session (every worker sees it at once: it is deleted from the store)."""
    session = guard.current()
    guard.sessions().end(session.key)
    guard.state().auditor.record("session.ended", "ok", subject=session.token.name,
                                 role=session.role, reason="signed-out",
                                 request_id=guard.request_id())
    response = redirect(url_for("console.login", m="signed-out"), code=303)
    guard.clear_cookie(response, guard.COOKIE)
    return response


@console.get("/")
@guard.page("viewer")
def home() -> Response:
    return redirect(url_for("console.plugins"), code=303)
