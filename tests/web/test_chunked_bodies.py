"""The 1 MiB limit on request bodies holds for bodies sent in chunks, on every route.

A chunked body has no `Content-Length`; Werkzeug reads one only up to `MAX_CONTENT_LENGTH`
and hands back what it read, so a larger one was taken cut short: a console form's fields
past the limit silently dropped, JSON padded past 1 MiB accepted. The environ below is what
gunicorn gives a chunked request (`wsgi.input_terminated`, no `CONTENT_LENGTH`); the real
server is in `test_served_limits.py`.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from dihya.needs import MAX_NEEDS_BYTES
from dihya.store.tokens import create_token, list_tokens
from dihya.web import create_app
from support.console import Console
from web.test_api import TODO, write_config


def chunked(body: bytes) -> dict[str, Any]:
    """Test-client arguments for `body` sent as gunicorn hands a chunked body over."""
    return {"input_stream": io.BytesIO(body),
            "environ_overrides": {"wsgi.input_terminated": True,
                                  "HTTP_TRANSFER_ENCODING": "chunked"}}


@pytest.fixture
def app(plugin_site, tmp_path: Path) -> Any:
    return create_app(write_config(tmp_path / "dihya.toml", [],
                                   '[audit]\nkey = "k"\n[web]\nrate_limit = "1000/minute"\n'))


def test_a_console_form_past_the_limit_is_refused_not_cut(app: Any) -> None:
    admin = create_token(app.extensions["dihya"].store, "admin-user", "admin")
    console = Console(app)
    assert console.sign_in(admin).status_code == 303
    form = (f"csrf_token={console.csrf}&name=flood&role=admin&x=").encode() \
        + b"a" * (MAX_NEEDS_BYTES + 10)
    response = console.client.post("/admin/tokens", content_type="application/x-www-form-"
                                   "urlencoded", **chunked(form))
    assert response.status_code == 413, response.status_code
    assert response.mimetype == "text/html"  # the console's own error page
    assert "flood" not in {t.name for t in list_tokens(app.extensions["dihya"].store)}
    # a small chunked form is taken as it is
    small = f"csrf_token={console.csrf}&name=small&role=viewer".encode()
    assert console.client.post("/admin/tokens", content_type="application/x-www-form-"
                                "urlencoded", **chunked(small)).status_code == 201


def test_a_chunked_json_body_past_the_limit_is_413(app: Any) -> None:
    import json

    token = create_token(app.extensions["dihya"].store, "dev", "developer")
    headers = {"Authorization": f"Bearer {token}"}
    valid = json.dumps({"needs": TODO}).encode()
    client = app.test_client()
    big = client.post("/api/v1/generate", headers=headers, content_type="application/json",
                      **chunked(valid + b" " * MAX_NEEDS_BYTES))
    assert big.status_code == 413 and big.mimetype == "application/problem+json"
    fits = client.post("/api/v1/generate", headers=headers, content_type="application/json",
                       **chunked(valid))
    assert fits.status_code == 200, fits.get_data(as_text=True)[:300]
