"""The console's pages and what they change, through Flask's test client with real plugin
wheels: approving after a review (with the file diff), the audit page and its exports and
purges, tokens, health."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest

from dihya.audit.gdpr import CSV_COLUMNS
from dihya.config import load_config
from dihya.store.tokens import list_tokens
from dihya.web import create_app
from support.wheels import plugin_source
from web.test_api import write_config
from web.test_console import Setup

NEW_HOOK = '''
def after_generation(self, code, needs):
    code["UPGRADED.txt"] = "v2\\n"
    return code
'''


@pytest.fixture
def upgraded(plugin_site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Setup:
    """`up` 1.0.0 approved and served (so its files are recorded), then 1.1.0 installed:
    one file added, one removed, the module changed."""
    monkeypatch.delenv("DIHYA_PLUGINS_DISABLE", raising=False)
    names = {"up": plugin_site.unique("up"), "new": plugin_site.unique("new")}
    module = "dihya_plugin_" + names["up"]
    plugin_site.install(names["up"], extra_files={f"{module}/old.py": "OLD = 1\n"})
    plugin_site.install(names["new"])
    config = write_config(tmp_path / "dihya.toml", [plugin_site.entry(names["up"])],
                          '[audit]\nkey = "test-key"\n')
    setup = Setup(create_app(config), names)
    plugin_site.install(names["up"], version="1.1.0", source=plugin_source(
        names["up"], version="1.1.0", body=NEW_HOOK),
        extra_files={f"{module}/new.py": "NEW = 2\n"})
    return setup


def test_approving_a_new_version_shows_the_diff_first(upgraded: Setup) -> None:
    console = upgraded.console("admin")
    name = upgraded.plugins["up"]
    assert console.post("/admin/plugins/reload").status_code == 303
    record = upgraded.state.snapshot().get(name)
    assert (record.status, record.reason) == ("refused", "version-mismatch")
    plugin_page = console.get(f"/admin/plugins/{name}").get_data(as_text=True)
    assert f"/admin/plugins/{name}/approve" in plugin_page
    review = console.get(f"/admin/plugins/{name}/approve").get_data(as_text=True)
    module = "dihya_plugin_" + name
    added = re.search(r'id="diff-added".*?</ul>', review, re.S).group(0)  # type: ignore[union-attr]
    removed = re.search(r'id="diff-removed".*?</ul>', review, re.S).group(0)  # type: ignore[union-attr]
    changed = re.search(r'id="diff-changed".*?</ul>', review, re.S).group(0)  # type: ignore[union-attr]
    assert f"{module}/new.py" in added and f"{module}/old.py" in removed
    # the metadata directory carries the version in its name: compared across the rename
    assert f"{module}/__init__.py" in changed and "-1.1.0.dist-info/METADATA" in changed
    assert "dist-info" not in added + removed
    reviewed = re.search(r'name="fingerprint" value="(sha256:[0-9a-f]{64})"', review)
    assert reviewed and "1.1.0" in review
    fingerprint = reviewed.group(1)
    assert f'id="approve-fingerprint">{fingerprint}<' in review
    count = re.search(r'id="approve-file-count">(\d+) files', review)
    assert count and int(count.group(1)) >= 5
    config_before = upgraded.state.config_path.read_text()
    stale = console.post(f"/admin/plugins/{name}/approve",
                         {"fingerprint": "sha256:" + "0" * 64, "mode": "in-process",
                          "roles": ["admin", "developer", "viewer"]})
    assert stale.status_code == 409 and "changed since you" in stale.get_data(as_text=True)
    assert upgraded.state.config_path.read_text() == config_before
    done = console.post(f"/admin/plugins/{name}/approve",
                        {"fingerprint": fingerprint, "mode": "in-process",
                         "roles": ["admin", "developer", "viewer"]})
    assert done.status_code == 303, done.get_data(as_text=True)
    assert upgraded.state.snapshot().get(name).status == "active"
    (entry,) = load_config(upgraded.state.config_path).entries_for(name)
    assert (entry.version, entry.fingerprint, entry.mode, entry.roles) == (
        "1.1.0", fingerprint, "in-process", None)
    approved = upgraded.events("plugin.approved")[-1]
    assert (approved["plugin"], approved["plugin_version"], approved["plugin_fingerprint"],
            approved["role"]) == (name, "1.1.0", fingerprint, "admin")
    assert approved["actor"].startswith("p-")


def test_approving_a_new_plugin_in_sandbox_mode(upgraded: Setup) -> None:
    console = upgraded.console("admin")
    name = upgraded.plugins["new"]
    review = console.get(f"/admin/plugins/{name}/approve").get_data(as_text=True)
    assert "was never approved here" in review
    fingerprint = re.search(r'name="fingerprint" value="([^"]+)"', review).group(1)  # type: ignore[union-attr]
    missing_role = console.post(f"/admin/plugins/{name}/approve",
                                {"fingerprint": fingerprint, "mode": "sandbox"})
    assert missing_role.status_code == 422
    done = console.post(f"/admin/plugins/{name}/approve",
                        {"fingerprint": fingerprint, "mode": "sandbox",
                         "roles": ["developer"], "required": "on"})
    assert done.status_code == 303, done.get_data(as_text=True)
    (entry,) = load_config(upgraded.state.config_path).entries_for(name)
    assert (entry.mode, entry.roles, entry.required) == ("sandbox", ("developer",), True)
    after = upgraded.state.snapshot().get(name)
    assert after.status == "active", after.message


def test_audit_page_filters_exports_and_purges(upgraded: Setup) -> None:
    console = upgraded.console("admin")
    name = upgraded.plugins["up"]
    assert console.post(f"/admin/plugins/{name}/disable", {"reason": "Jane asked"}) \
        .status_code == 303
    page = console.get(f"/admin/audit?plugin={name}").get_data(as_text=True)
    assert "plugin.disabled" in page and "Jane asked" in page
    assert "<code>session.started</code>" not in page  # not about this plugin
    only_ok = console.get("/admin/audit?outcome=denied").get_data(as_text=True)
    assert "No event matches." in only_ok
    bad = console.get("/admin/audit?pseudonym=alice&since=yesterday").get_data(as_text=True)
    assert "A pseudonym looks like" in bad and "must look like" in bad
    # a time range in the reader's zone: UTC+02:00 is a getTimezoneOffset() of -120
    future = console.get("/admin/audit?since=2999-01-01T00:00&tzoffset=-120")
    assert "No event matches." in future.get_data(as_text=True)

    exported = console.post("/admin/audit/export", {"plugin": name, "format": "jsonl"})
    assert exported.status_code == 200 and exported.mimetype == "application/jsonl"
    assert f"plugin-{name}" in exported.headers["Content-Disposition"]
    rows = [json.loads(line) for line in exported.get_data(as_text=True).splitlines()]
    assert rows and {r["plugin"] for r in rows} == {name}
    assert "plugin.disabled" in {r["type"] for r in rows}
    as_csv = console.post("/admin/audit/export", {"plugin": name, "format": "csv"})
    table = list(csv.DictReader(io.StringIO(as_csv.get_data(as_text=True))))
    assert tuple(table[0]) == CSV_COLUMNS and {r["plugin"] for r in table} == {name}
    export_event = upgraded.events("audit.exported")[-1]
    assert (export_event["plugin"], export_event["format"], export_event["role"]) == (
        name, "csv", "admin")

    subject = console.post("/admin/audit/export", {"subject": "admin-user", "format": "json"})
    assert all(r.get("actor") or r.get("target") for r in json.loads(subject.data))

    preview = console.post("/admin/audit/purge", {"subject": "viewer-user"})
    assert preview.status_code == 200 and "Purge now" in preview.get_data(as_text=True)
    assert any(t.name == "viewer-user" for t in list_tokens(upgraded.state.store))
    assert not upgraded.events("audit.purged")
    confirmed = console.post("/admin/audit/purge", {"subject": "viewer-user",
                                                    "confirm": "yes"})
    assert confirmed.status_code == 303
    assert not any(t.name == "viewer-user" for t in list_tokens(upgraded.state.store))
    purged = upgraded.events("audit.purged")[-1]
    assert (purged["reason"], purged["role"]) == ("subject", "admin")
    notice = console.get("/admin/audit").get_data(as_text=True)
    assert "Subject erased" in notice and "viewer-user" not in notice
    by_age = console.post("/admin/audit/purge", {"older_than_days": "3650"})
    assert "Removing every event older than 3650 days" in by_age.get_data(as_text=True)
    both = console.post("/admin/audit/purge", {"subject": "x", "older_than_days": "1"})
    assert both.status_code == 422


def test_tokens_are_shown_once_listed_with_last_use_and_revoked(upgraded: Setup) -> None:
    console = upgraded.console("admin")
    created = console.post("/admin/tokens", {"name": "ci-bot", "role": "developer"})
    html = created.get_data(as_text=True)
    token = re.search(r'id="new-token" class="token-value" value="([^"]+)"', html)
    assert created.status_code == 201 and token
    assert html.count(token.group(1)) == 1
    listing = console.get("/admin/tokens").get_data(as_text=True)
    assert token.group(1) not in listing and 'data-token="ci-bot"' in listing
    row = re.search(r'data-token="ci-bot">.*?</tr>', listing, re.S).group(0)  # type: ignore[union-attr]
    assert "never" in row
    client = upgraded.app.test_client()
    headers = {"Authorization": f"Bearer {token.group(1)}"}
    assert client.get("/api/v1/plugins", headers=headers).status_code == 200
    row = re.search(r'data-token="ci-bot">.*?</tr>',  # type: ignore[union-attr]
                    console.get("/admin/tokens").get_data(as_text=True), re.S).group(0)
    assert "never" not in row and "<time" in row
    assert console.post("/admin/tokens", {"name": "ci-bot", "role": "admin"}) \
        .status_code == 422
    assert console.post("/admin/tokens/revoke", {"name": "ci-bot"}).status_code == 303
    assert client.get("/api/v1/plugins", headers=headers).status_code == 401
    made, revoked = upgraded.events("token.created")[-1], upgraded.events("token.revoked")[-1]
    assert made["target"] == revoked["target"] and made["target"].startswith("p-")
    assert (made["role"], made["actor"]) == ("developer", revoked["actor"])
    assert console.post("/admin/tokens/revoke", {"name": "nope"}).status_code == 404


def test_tokens_get_an_expiry_and_are_rotated_shown_once(upgraded: Setup) -> None:
    console = upgraded.console("admin")
    client = upgraded.app.test_client()
    page = console.get("/admin/tokens").get_data(as_text=True)
    assert '<option value="90d" selected>90 days</option>' in page
    made = console.post("/admin/tokens", {"name": "ops-bot", "role": "viewer",
                                          "expires": "30d"})
    old = re.search(r'id="new-token" class="token-value" value="([^"]+)"',
                    made.get_data(as_text=True))
    assert made.status_code == 201 and old
    info = next(t for t in list_tokens(upgraded.state.store) if t.name == "ops-bot")
    assert info.expires_at is not None
    assert 29.9 * 86400 < info.expires_at - info.created_at < 30.1 * 86400
    # a duration the form does not offer is refused, nothing created
    forged = console.post("/admin/tokens", {"name": "forged", "role": "viewer",
                                            "expires": "9999w"})
    assert forged.status_code == 422
    assert "forged" not in {t.name for t in list_tokens(upgraded.state.store)}

    rotated = console.post("/admin/tokens/rotate", {"name": "ops-bot"})
    html = rotated.get_data(as_text=True)
    new = re.search(r'id="new-token" class="token-value" value="([^"]+)"', html)
    assert rotated.status_code == 201 and new and new.group(1) != old.group(1)
    assert "Token ops-bot rotated" in html and html.count(new.group(1)) == 1
    assert client.get("/api/v1/plugins",
                      headers={"Authorization": f"Bearer {old.group(1)}"}).status_code == 401
    assert client.get("/api/v1/plugins",
                      headers={"Authorization": f"Bearer {new.group(1)}"}).status_code == 200
    after = next(t for t in list_tokens(upgraded.state.store) if t.name == "ops-bot")
    assert (after.role, after.expires_at) == ("viewer", info.expires_at)
    event = upgraded.events("token.rotated")[-1]
    assert event["target"].startswith("p-") and event["role"] == "viewer"
    assert new.group(1) not in json.dumps(upgraded.events("token.rotated"))
    assert console.post("/admin/tokens/rotate", {"name": "nope"}).status_code == 404


def test_an_admin_who_rotates_their_own_token_is_signed_out(upgraded: Setup) -> None:
    console = upgraded.console("admin")
    assert console.post("/admin/tokens/rotate", {"name": "admin-user"}).status_code == 201
    assert console.get("/admin/tokens").status_code in (302, 303)


def test_health_page_says_what_readyz_says(upgraded: Setup) -> None:
    viewer = upgraded.console("viewer")
    html = viewer.get("/admin/health").get_data(as_text=True)
    ready = upgraded.app.test_client().get("/readyz").get_json()
    for check, ok in ready["checks"].items():
        assert f'class="check check-{"ok" if ok else "bad"}" data-check="{check}"' in html
    assert "Ready: this worker serves requests" in html
    assert f"{ready['state_version']} (every change bumps it" in html
