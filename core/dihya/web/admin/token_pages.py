"""API tokens: create (shown once, with an optional expiry), list with last use, rotate,
revoke; admins only.

The same core functions as `dihya tokens create|list|rotate|revoke` (`dihya.store.tokens`),
audited as the CLI audits them (`token.created`, `token.rotated`, `token.revoked`, the
token's name only as a pseudonym), with the admin as actor. A new or rotated token is shown
in the answer to the POST that made it, never in a URL, a redirect or the store.
"""

from __future__ import annotations

import time

from flask import request
from werkzeug.wrappers import Response

from dihya.config import ROLES
from dihya.store.tokens import (
    TokenError,
    create_token,
    list_tokens,
    parse_duration,
    revoke_token,
    rotate_token,
)
from dihya.web.admin import guard
from dihya.web.admin.blueprint import console

#: what the expiry menu offers (the CLI's `--expires` takes any duration)
EXPIRIES = (("", "no expiry"), ("30d", "30 days"), ("90d", "90 days"), ("365d", "365 days"))


def _page(status: int = 200, created: str | None = None, created_name: str | None = None,
          error: str | None = None, rotated: bool = False) -> Response:
    return guard.render("tokens.html", status, tokens=list_tokens(guard.state().store),
                        roles=ROLES, created=created, created_name=created_name, error=error,
                        own=guard.current().token.name, expiries=EXPIRIES, rotated=rotated,
                        now=time.time())


def _expiry(text: str) -> float | None:
    """The form's expiry as a time (None: none); `TokenError` for a duration it does not
    offer (a forged form)."""
    if not text:
        return None
    if text not in dict(EXPIRIES):
        raise TokenError(f"expiry {text!r} is not one of the offered ones")
    return time.time() + parse_duration(text)


@console.get("/tokens")
@guard.page("admin")
def tokens() -> Response:
    return _page()


@console.post("/tokens")
@guard.page("admin")
def create() -> Response:
    """Create a token and show it, this once."""
    name = request.form.get("name", "").strip()
    role = request.form.get("role", "")
    st, session = guard.state(), guard.current()
    try:
        token = create_token(st.store, name, role, _expiry(request.form.get("expires", "")))
    except TokenError as exc:
        return _page(422, error=str(exc))
    st.auditor.record("token.created", "ok", subject=session.token.name, target=name,
                      role=role, request_id=guard.request_id())
    return _page(201, created=token, created_name=name)


@console.post("/tokens/rotate")
@guard.page("admin")
def rotate() -> Response:
    """Give a token a new secret and show it, this once: the old secret (and every console
    session opened with it) stops working at once; role and expiry are kept. The name comes
    in the form, not the path, as for revoke."""
    token_name = request.form.get("name", "")
    st, session = guard.state(), guard.current()
    try:
        token, info = rotate_token(st.store, token_name)
    except TokenError as exc:
        raise guard.Denied(404, "No such token", "No token has this name (any more); the "
                           "tokens page lists them.") from exc
    st.auditor.record("token.rotated", "ok", subject=session.token.name, target=token_name,
                      role=info.role, request_id=guard.request_id())
    return _page(201, created=token, created_name=token_name, rotated=True)


@console.post("/tokens/revoke")
@guard.page("admin")
def revoke() -> Response:
    """Revoke a token at once (its console sessions end with it). The name comes in the
    form, not the path: a token's name is a subject id, and paths are in the access log."""
    token_name = request.form.get("name", "")
    st, session = guard.state(), guard.current()
    if not revoke_token(st.store, token_name):
        raise guard.Denied(404, "No such token", "No token has this name (any more); the "
                           "tokens page lists them.")
    st.auditor.record("token.revoked", "ok", subject=session.token.name, target=token_name,
                      request_id=guard.request_id())
    # the notice waits in the store until the next page: no subject id in it
    return guard.done("Token revoked: it no longer opens the API or the console.",
                      "console.tokens")
