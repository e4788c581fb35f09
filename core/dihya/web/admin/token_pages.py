"""API tokens: create (shown once), list with last use, revoke; admins only.

The same core functions as `dihya tokens create|list|revoke` (`dihya.store.tokens`), audited as
the CLI audits them (`token.created`, `token.revoked`, the new token's name only as a
pseudonym), with the admin as actor. A new token is shown in the answer to the POST that
created it, never in a URL, a redirect or the store.
"""

from __future__ import annotations

from flask import request
from werkzeug.wrappers import Response

from dihya.config import ROLES
from dihya.store.tokens import TokenError, create_token, list_tokens, revoke_token
from dihya.web.admin import guard
from dihya.web.admin.blueprint import console


def _page(status: int = 200, created: str | None = None, created_name: str | None = None,
          error: str | None = None) -> Response:
    return guard.render("tokens.html", status, tokens=list_tokens(guard.state().store),
                        roles=ROLES, created=created, created_name=created_name, error=error,
                        own=guard.current().token.name)


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
        token = create_token(st.store, name, role)
    except TokenError as exc:
        return _page(422, error=str(exc))
    st.auditor.record("token.created", "ok", subject=session.token.name, target=name,
                      role=role, request_id=guard.request_id())
    return _page(201, created=token, created_name=name)


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
