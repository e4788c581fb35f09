"""The operator console through Flask's test client: sessions, CSRF, CSP, roles, and that
every route of the app is protected. Real plugins are installed from wheels; the browser
tests are in tests/console (tox -e console-e2e)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from dihya.gate.decide import STATUSES
from dihya.gate.discovery import discover
from dihya.store import console_sessions_table
from dihya.store.tokens import create_token, revoke_token
from dihya.web import create_app
from dihya.web.admin import CONTENT_SECURITY_POLICY
from dihya.web.admin.words import REASONS, STATUS_WORDS
from support.console import Console, page_facts
from web.test_api import TODO, write_config

DOCS = Path(__file__).parents[2] / "docs"


class Setup:
    """An app with two approved plugins, one installed but not approved, and tokens."""

    def __init__(self, app: Any, plugins: dict[str, str]) -> None:
        self.app = app
        self.plugins = plugins
        self.state = app.extensions["dihya"]
        self.state.version_ttl_s = 0.0  # every request sees the store's latest state
        self.tokens = {role: create_token(self.state.store, f"{role}-user", role)
                       for role in ("admin", "developer", "viewer")}

    def console(self, role: str | None = "admin", **kw: Any) -> Console:
        console = Console(self.app, **kw)
        if role is not None:
            assert console.sign_in(self.tokens[role]).status_code == 303
        return console

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        log = self.state.auditor.log
        return [r for r in log.rows() if kind is None or r["type"] == kind]

    def api(self, method: str, url: str, role: str = "admin", **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"}
        return getattr(self.app.test_client(), method)(url, headers=headers, **kw)


@pytest.fixture
def setup(plugin_site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Setup:
    monkeypatch.delenv("DIHYA_PLUGINS_DISABLE", raising=False)
    names = {"open": plugin_site.unique("open"), "admins": plugin_site.unique("admins"),
             "new": plugin_site.unique("new")}
    for name in names.values():
        plugin_site.install(name)
    entries = [plugin_site.entry(names["open"]),
               plugin_site.entry(names["admins"], roles=("admin",))]
    config = write_config(tmp_path / "dihya.toml", entries,
                          '[web]\nrate_limit = "1000/minute"\n[audit]\nkey = "test-key"\n')
    return Setup(create_app(config), names)


# -- signing in ------------------------------------------------------------------------


def test_sign_in_starts_a_server_side_session(setup: Setup) -> None:
    console = Console(setup.app)
    response = console.sign_in(setup.tokens["admin"], "/admin/tokens")
    assert response.status_code == 303 and response.headers["Location"] == "/admin/tokens"
    cookie = next(c for c in response.headers.getlist("Set-Cookie")
                  if c.startswith("dihya_console="))
    attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
    assert {"httponly", "path", "samesite"} <= attributes and "secure" not in attributes
    assert "SameSite=Strict" in cookie and "Path=/admin" in cookie
    value = console.cookie("dihya_console").value
    # the browser holds a random id; the store holds its hash, never the token
    assert value not in setup.tokens["admin"] and setup.tokens["admin"] not in cookie
    with setup.state.store.begin() as conn:
        rows = conn.execute(sa.select(console_sessions_table)).all()
    assert len(rows) == 1 and value not in repr(rows)
    assert setup.tokens["admin"] not in repr(rows)
    started = setup.events("session.started")
    assert started[-1]["role"] == "admin" and started[-1]["actor"].startswith("p-")


def test_the_cookie_is_secure_over_https(setup: Setup) -> None:
    console = Console(setup.app, base_url="https://localhost")
    assert "Secure" in console.get("/admin/login").headers["Set-Cookie"]
    response = console.sign_in(setup.tokens["viewer"])
    assert all("Secure" in c for c in response.headers.getlist("Set-Cookie"))


def test_wrong_tokens_and_developers_cannot_sign_in(setup: Setup) -> None:
    console = Console(setup.app)
    bad = console.sign_in("dihya_0000000000000000_" + "x" * 43)
    assert bad.status_code == 401 and "unknown or revoked" in bad.get_data(as_text=True)
    assert setup.events("auth.failed")[-1]["reason"] == "invalid-token"
    developer = console.sign_in(setup.tokens["developer"])
    assert developer.status_code == 403 and "admin" in developer.get_data(as_text=True)
    denied = setup.events("acl.denied")[-1]
    assert (denied["reason"], denied["role"]) == ("console-role", "developer")
    assert console.get("/admin/plugins").status_code == 303  # still signed out


def test_a_sign_in_form_from_elsewhere_is_refused(setup: Setup) -> None:
    client = setup.app.test_client()
    # no sign-in cookie: the form was not served to this browser
    response = client.post("/admin/login", data={"token": setup.tokens["admin"],
                                                 "csrf_token": "forged"})
    assert response.status_code == 403 and response.mimetype == "text/html"
    assert client.get_cookie("dihya_console", path="/admin") is None


def test_sessions_are_shared_by_workers_and_end_everywhere(setup: Setup) -> None:
    other = create_app(setup.state.config_path)  # a second worker on the same store
    console = setup.console("viewer")
    cookie = console.cookie("dihya_console").value
    client = other.test_client()
    client.set_cookie("dihya_console", cookie, path="/admin")
    assert client.get("/admin/plugins").status_code == 200
    assert console.post("/admin/logout").status_code == 303
    assert client.get("/admin/plugins").status_code == 303
    assert setup.events("session.ended")[-1]["reason"] == "signed-out"


def test_revoking_the_token_ends_its_sessions(setup: Setup) -> None:
    console = setup.console("viewer")
    assert console.get("/admin/plugins").status_code == 200
    assert revoke_token(setup.state.store, "viewer-user")
    response = console.get("/admin/plugins")
    assert response.status_code == 303 and "m=expired" in response.headers["Location"]


def test_an_idle_session_ends_and_polling_is_not_activity(setup: Setup) -> None:
    console = setup.console("admin")
    store = setup.state.store

    def seen_at() -> float:
        with store.begin() as conn:
            return conn.execute(sa.select(console_sessions_table.c.seen_at)).scalar_one()

    with store.begin() as conn:  # as if the last page view were 10 minutes ago
        conn.execute(console_sessions_table.update().values(seen_at=time.time() - 600))
    before = seen_at()
    assert console.get("/admin/live/plugins").status_code == 200
    assert seen_at() == before, "a background poll kept the session alive"
    assert console.get("/admin/plugins").status_code == 200
    assert seen_at() > before
    with store.begin() as conn:  # 16 minutes without a page view: over the idle limit
        conn.execute(console_sessions_table.update().values(seen_at=time.time() - 960))
    assert console.get("/admin/live/plugins").status_code == 401
    assert console.get("/admin/plugins").status_code == 303


# -- CSRF, CSP, roles ---------------------------------------------------------------------


def test_state_changes_need_the_sessions_csrf_token(setup: Setup) -> None:
    console = setup.console("admin")
    name = setup.plugins["open"]
    url = f"/admin/plugins/{name}/disable"
    for data, headers in (({}, {}), ({"csrf_token": "wrong"}, {}),
                          ({"csrf_token": console.csrf}, {"Sec-Fetch-Site": "cross-site"}),
                          ({"csrf_token": console.csrf}, {"Sec-Fetch-Site": "same-site"})):
        response = console.post(url, data, csrf=False, headers=headers)
        assert response.status_code == 403, data
        assert "Nothing was changed" in response.get_data(as_text=True)
    assert setup.state.snapshot().get(name).status == "active"
    assert [e["reason"] for e in setup.events("auth.failed")] == ["csrf"] * 4
    ok = console.post(url, {"reason": "CVE-1"}, headers={"Sec-Fetch-Site": "same-origin"})
    assert ok.status_code == 303


def test_every_page_has_a_strict_csp_and_no_inline_code(setup: Setup) -> None:
    console = setup.console("admin")
    name = setup.plugins["new"]
    pages = ["/admin/plugins", f"/admin/plugins/{setup.plugins['open']}",
             f"/admin/plugins/{name}", f"/admin/plugins/{name}/approve", "/admin/audit",
             "/admin/tokens", "/admin/health", "/admin/nope", "/admin/login"]
    for url in pages:
        response = console.get(url, follow_redirects=True)
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY, url
        assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
        assert response.headers["X-Frame-Options"] == "DENY"
        facts = page_facts(response.get_data(as_text=True))
        assert (facts.inline_scripts, facts.style_attributes, facts.handlers) == (0, 0, []), url
        # everything from this app: no CDN, no other host
        assert all(r.startswith("/admin/static/") for r in facts.resources), facts.resources
        # usable without a mouse or sight: every control has a label, every button a name
        assert not facts.unlabelled(), (url, facts.unlabelled())
        assert all(facts.buttons), (url, facts.buttons)
    for static in ("console.css", "console.js"):
        assert console.get(f"/admin/static/{static}").status_code == 200


def test_viewers_see_no_action_and_are_refused_if_they_force_one(setup: Setup) -> None:
    viewer = setup.console("viewer")
    name = setup.plugins["open"]
    for url in ("/admin/plugins", f"/admin/plugins/{name}", "/admin/health"):
        response = viewer.get(url)
        assert response.status_code == 200, url
        facts = page_facts(response.get_data(as_text=True))
        # the only form a viewer gets is the sign-out button; no link to admin pages
        assert [f["action"] for f in facts.forms] == ["/admin/logout"], url
        html = response.get_data(as_text=True)
        assert 'href="/admin/audit' not in html and 'href="/admin/tokens' not in html
        assert "/approve" not in html
        assert all("Copy" in b for b in facts.buttons if b != "Sign out"), facts.buttons
    for url in ("/admin/audit", "/admin/tokens", f"/admin/plugins/{setup.plugins['new']}"
                "/approve"):
        assert viewer.get(url).status_code == 403, url
    forced = [(f"/admin/plugins/{name}/disable", {"reason": "x"}),
              (f"/admin/plugins/{name}/enable", {}),
              (f"/admin/plugins/{name}/reset-quarantine", {}),
              ("/admin/plugins/reload", {}),
              (f"/admin/plugins/{setup.plugins['new']}/approve", {"mode": "sandbox"}),
              ("/admin/audit/export", {"format": "csv"}),
              ("/admin/audit/purge", {"subject": "admin-user", "confirm": "yes"}),
              ("/admin/tokens", {"name": "evil", "role": "admin"}),
              ("/admin/tokens/rotate", {"name": "admin-user"}),
              ("/admin/tokens/revoke", {"name": "admin-user"})]
    version = setup.state.store.state_version()
    for url, data in forced:
        response = viewer.post(url, data)
        assert response.status_code == 403, url
        assert "needs the role `admin`" in response.get_data(as_text=True)
    assert setup.state.store.state_version() == version
    assert setup.state.snapshot().get(name).status == "active"
    assert {t["reason"] for t in setup.events("acl.denied")} == {"needs-admin"}
    assert len(setup.events("acl.denied")) == len(forced) + 3
    assert not setup.events("token.created") and not setup.events("audit.purged")
    assert not setup.events("token.rotated")


def test_console_errors_are_pages_and_api_errors_stay_problems(setup: Setup) -> None:
    console = setup.console("admin")
    page = console.get("/admin/no/such/page")
    assert page.status_code == 404 and page.mimetype == "text/html"
    assert "no such console page" in page.get_data(as_text=True)
    api = setup.api("get", "/api/v1/plugins/nope")
    assert api.status_code == 404 and api.mimetype == "application/problem+json"


def test_every_route_of_the_app_is_protected(setup: Setup) -> None:
    """Enumerate the app's routes: console routes need a session (admin-only ones the
    admin role), API routes a bearer token (a console session is not one), and only the
    health checks, the OpenAPI document, the sign-in form and static files are public."""
    app = setup.app
    viewer = setup.console("viewer")
    public = {"health.healthz", "health.readyz", "openapi.document", "static",
              "console.static", "console.login"}
    sample = {"name": setup.plugins["open"], "filename": "console.css",
              "action_name": "echo"}
    seen = set()
    for rule in app.url_map.iter_rules():
        seen.add(rule.endpoint)
        url = rule.build(sample, append_unknown=False)[1]  # type: ignore[index]
        view = app.view_functions[rule.endpoint]
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            anonymous = app.test_client().open(url, method=method)
            if rule.endpoint in public:
                if method == "GET" and rule.endpoint != "static":  # /static/ holds nothing
                    assert anonymous.status_code == 200, url
                continue
            if rule.rule.startswith("/admin"):
                role = view.console_role  # set by guard.page, checked here
                assert role in ("viewer", "admin"), rule.rule
                expected = {"GET": (303, 401), "POST": (401,)}[method]
                assert anonymous.status_code in expected, (method, url)
                if role == "admin":
                    with_viewer = viewer.client.open(url, method=method,
                                                     data={"csrf_token": viewer.csrf})
                    assert with_viewer.status_code == 403, (method, url)
            else:
                assert rule.rule.startswith("/api/v1/"), rule.rule
                assert anonymous.status_code == 401, (method, url)
                # a console session is no bearer token (no cookie-authenticated API: no CSRF)
                with_cookie = viewer.client.open(url, method=method)
                assert with_cookie.status_code == 401, (method, url)
    assert {"console.plugins", "console.audit", "console.tokens", "console.health"} <= seen


# -- the plugin switches ----------------------------------------------------------------


def _comparable(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k not in ("seq", "at", "request_id", "event_id")}


def test_disable_and_enable_are_audited_like_the_api(setup: Setup) -> None:
    console = setup.console("admin")
    name = setup.plugins["open"]
    response = console.post(f"/admin/plugins/{name}/disable", {"reason": "CVE-2"})
    assert response.status_code == 303
    page = console.get(response.headers["Location"]).get_data(as_text=True)
    assert f"Disabled {name}." in page and "disabled by an admin: CVE-2" in page
    generated = setup.api("post", "/api/v1/generate", "developer", json={"needs": TODO})
    report = {p["name"]: p for p in generated.get_json()["report"]["plugins"]}
    assert (report[name]["status"], report[name]["detail"]) == ("skipped",
                                                                "disabled/disabled-by-admin")
    assert console.post(f"/admin/plugins/{name}/enable").status_code == 303
    assert setup.state.snapshot().get(name).status == "active"
    # the same changes through the API record the same events
    assert setup.api("post", f"/api/v1/plugins/{name}/disable",
                     json={"reason": "CVE-2"}).status_code == 200
    assert setup.api("post", f"/api/v1/plugins/{name}/enable").status_code == 200
    disabled, enabled = setup.events("plugin.disabled"), setup.events("plugin.enabled")
    assert _comparable(disabled[0]) == _comparable(disabled[1])
    assert _comparable(enabled[0]) == _comparable(enabled[1])
    assert disabled[0]["note"] == "CVE-2" and disabled[0]["role"] == "admin"


def test_reset_quarantine_and_reload(setup: Setup) -> None:
    console = setup.console("admin")
    name = setup.plugins["open"]
    assert console.post(f"/admin/plugins/{name}/reset-quarantine").status_code == 409
    setup.state.store.set_plugin_disabled(name, True, "quarantined", "5 consecutive hook "
                                          "failures", actor="dihya")
    page = console.get(f"/admin/plugins/{name}").get_data(as_text=True)
    assert "Reset quarantine" in page and "Quarantined" in page
    assert console.post(f"/admin/plugins/{name}/reset-quarantine").status_code == 303
    assert setup.state.snapshot().get(name).status == "active"
    version = setup.state.store.state_version()
    reloaded = console.post("/admin/plugins/reload", {"back": f"/admin/plugins/{name}"})
    assert reloaded.headers["Location"] == f"/admin/plugins/{name}"
    assert setup.state.store.state_version() == version + 1
    assert console.post("/admin/plugins/reload", {"back": "//evil.example/"}) \
        .headers["Location"] == "/admin/plugins"


def installed_elsewhere(setup: Setup) -> int:
    """Plugins installed in this interpreter besides the test's own (the bundled ones in a
    developer's venv, say): listed too, refused as not allowlisted."""
    return sum(1 for p in discover() if p.name not in setup.plugins.values())


def test_plugins_page_words_filters_and_counts(setup: Setup) -> None:
    console = setup.console("viewer")
    html = console.get("/admin/plugins").get_data(as_text=True)
    for name in setup.plugins.values():
        assert f'data-plugin="{name}"' in html
    assert "Not approved: no allowlist entry names it." in html
    assert re.search(r'data-count="active">2<', html) and re.search(
        rf'data-count="refused">{1 + installed_elsewhere(setup)}<', html)
    refused = console.get("/admin/plugins?status=refused").get_data(as_text=True)
    assert f'data-plugin="{setup.plugins["new"]}"' in refused
    assert f'data-plugin="{setup.plugins["open"]}"' not in refused


def test_live_fragment_has_an_etag_and_follows_other_workers(setup: Setup) -> None:
    console = setup.console("viewer")
    first = console.get("/admin/live/plugins")
    etag = first.headers["ETag"]
    assert first.get_json()["html"].count("data-plugin=") == 3 + installed_elsewhere(setup)
    assert console.get("/admin/live/plugins", headers={"If-None-Match": etag}) \
        .status_code == 304
    other = create_app(setup.state.config_path)  # another worker, built at another time
    client = other.test_client()
    client.set_cookie("dihya_console", console.cookie("dihya_console").value, path="/admin")
    # the same state gives the same fragment on every worker: no false "change" on the page
    assert client.get("/admin/live/plugins").headers["ETag"] == etag
    client.post(f"/api/v1/plugins/{setup.plugins['open']}/disable",
                headers={"Authorization": f"Bearer {setup.tokens['admin']}"})
    changed = console.get("/admin/live/plugins", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and "disabled-by-admin" in changed.get_json()["html"]


def test_every_reason_code_has_words() -> None:
    assert set(STATUS_WORDS) == set(STATUSES)
    for codes in STATUSES.values():
        for code in codes:
            assert code in REASONS and all(REASONS[code]), code


def test_every_console_page_has_a_screenshot_in_the_docs(setup: Setup) -> None:
    """The e2e run writes docs/console/<page>.png (DIHYA_CONSOLE_SCREENSHOTS=docs/console);
    a page added without one fails here."""
    pages = {rule.endpoint.split(".", 1)[1] for rule in setup.app.url_map.iter_rules()
             if rule.endpoint.startswith("console.") and "GET" in (rule.methods or ())
             and not rule.rule.startswith(("/admin/live/", "/admin/static/"))
             and rule.rule not in ("/admin/",)}
    missing = sorted(p for p in pages if not (DOCS / "console" / f"{p}.png").exists())
    assert not missing, f"no screenshot in docs/console for {missing}: run tox -e " \
        "console-e2e with DIHYA_CONSOLE_SCREENSHOTS=docs/console"
    guide = (DOCS / "operator-guide.md").read_text("utf-8")
    for page in pages:
        assert f"console/{page}.png" in guide, page


def test_json_lines_export_of_the_api(setup: Setup) -> None:
    response = setup.api("get", "/api/v1/audit/export?format=jsonl")
    assert response.status_code == 200 and response.mimetype == "application/jsonl"
    lines = response.get_data(as_text=True).splitlines()
    assert lines and all(json.loads(line)["seq"] for line in lines)
