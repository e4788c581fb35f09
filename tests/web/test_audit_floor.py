"""The HTTP purge floor (`[audit] http_purge_min_age_days`): an admin token, stolen or not,
cannot erase over HTTP (API or console) the events of the last day, so not what it just
did; the operator's `dihya audit purge` on the server is not limited.

A real plugin from a wheel, a real SQLite file. The floor is about event times, which the
hash chain covers: to have events older than the floor without waiting a day, the tests
move the process's clock (`time.time`) forward two days between "old" and "young" events.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
from click.testing import CliRunner
from test_api import TODO, Api, problem, write_config

from dihya.cli import main
from dihya.pluginlog.collect import PluginLogRecord
from dihya.store import pluginlogs
from dihya.store.tokens import create_token

DAY = 86400.0
STOLEN = "mallory"  # the admin token an attacker holds


@pytest.fixture
def make_api(plugin_site: Any, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Api]:
    monkeypatch.delenv("DIHYA_PLUGINS_DISABLE", raising=False)
    name = plugin_site.unique("floor")
    plugin_site.install(name)

    def make(audit: str = "") -> Api:
        config = write_config(tmp_path / "dihya.toml", [plugin_site.entry(name)],
                              '[web]\nrate_limit = "1000/minute"\n' + audit)
        from dihya.web import create_app

        return Api(create_app(config), {"open": name})

    return make


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """Move this process's clock forward by that many days (events after it are younger)."""
    real = time.time

    def move(days: float) -> None:
        monkeypatch.setattr(time, "time", lambda: real() + days * DAY)

    return move


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _act(api: Api, token: str, note: str) -> None:
    """What the attacker does: switch the plugin off (with a note) and on again."""
    plugin = api.plugins["open"]
    off = api.client.post(f"/api/v1/plugins/{plugin}/disable", headers=_bearer(token),
                          json={"reason": note})
    assert off.status_code == 200, off.get_data(as_text=True)
    assert api.client.post(f"/api/v1/plugins/{plugin}/enable",
                           headers=_bearer(token)).status_code == 200


def _events(api: Api) -> list[dict[str, Any]]:
    answer = api.get("/api/v1/audit/export", "admin")
    assert answer.status_code == 200
    events: list[dict[str, Any]] = answer.get_json()
    return events


def _notes(api: Api) -> set[str]:
    return {e["note"] for e in _events(api) if "note" in e}


def _cli(config: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--config", str(config), *args])
    return result.exit_code, result.output


def _old_and_young(api: Api, later: Callable[[float], None]) -> str:
    """Events two days old (by the moved clock), then the stolen token's recent ones."""
    stolen = create_token(api.app.extensions["dihya"].store, STOLEN, "admin")
    assert api.post("/api/v1/generate", json={"needs": TODO}).status_code == 200
    _act(api, stolen, "old switch")
    later(2)
    _act(api, stolen, "what mallory did")
    return stolen


def test_a_stolen_admin_token_cannot_purge_everything(make_api: Callable[[str], Api],
                                                      later: Callable[[float], None],
                                                      tmp_path: Path) -> None:
    api = make_api("")  # the default floor: 1 day
    stolen = _old_and_young(api, later)
    before = _events(api)
    refused = problem(api.client.post("/api/v1/audit/purge", headers=_bearer(stolen),
                                      json={"older_than_days": 0}), 403)
    for said in ("the last 1 day:", "at least 1, not 0", "[audit] http_purge_min_age_days",
                 "dihya audit purge"):
        assert said in refused["detail"]
    after = _events(api)
    assert [e["seq"] for e in after][:len(before)] == [e["seq"] for e in before]
    denied = after[-1]  # an export lists what was there before its own event
    assert (denied["type"], denied["outcome"], denied["reason"], denied["days"],
            denied["role"]) == ("audit.purged", "denied", "purge-floor", 0, "admin")
    assert STOLEN not in json.dumps(denied)  # a pseudonym, as for every actor

    # at the floor: what is older goes, the last day stays
    answer = api.client.post("/api/v1/audit/purge", headers=_bearer(stolen),
                             json={"older_than_days": 1})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    counts = answer.get_json()
    assert counts["events"] >= 3 and counts["floor_days"] == 1
    assert (counts["kept_events"], counts["kept_logs"], counts["kept_reason"]) == (0, 0, None)
    assert _notes(api) == {"what mallory did"}
    assert "generation" not in {e["type"] for e in _events(api)}
    assert api.app.extensions["dihya"].auditor.log.verify().ok
    code, out = _cli(tmp_path / "dihya.toml", "audit", "verify")
    assert code == 0 and out.startswith("ok:"), out


def test_a_stolen_admin_token_cannot_erase_its_own_recent_events(
        make_api: Callable[[str], Api], later: Callable[[float], None],
        tmp_path: Path) -> None:
    api = make_api("")
    stolen = _old_and_young(api, later)
    mine = api.get(f"/api/v1/audit/export?subject={STOLEN}", "admin").get_json()
    assert len(mine) == 4
    answer = api.client.post("/api/v1/audit/purge", headers=_bearer(stolen),
                             json={"subject": STOLEN})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    counts = answer.get_json()
    # nothing made unlinkable: the recent events (its switch off and on, and the export
    # that named it) keep their link to the token's subject
    assert (counts["events"], counts["kept_events"], counts["notes"], counts["tokens"]) == (
        0, 3, 1, 1)
    assert "pseudonym mapping stays" in counts["kept_reason"]
    assert "http_purge_min_age_days" in counts["kept_reason"]
    still = api.get(f"/api/v1/audit/export?subject={STOLEN}", "admin").get_json()
    # still linked, and so are the export that named it and its purge
    assert [e["type"] for e in still] == [e["type"] for e in mine] + [
        "audit.exported", "audit.purged"]
    assert [e.get("note") for e in still if e["type"] == "plugin.disabled"] == [
        None, "what mallory did"]  # the old note went, the recent one stays
    problem(api.client.get("/api/v1/plugins", headers=_bearer(stolen)), 401)  # token gone
    assert api.app.extensions["dihya"].auditor.log.verify().ok

    # the operator honours an erasure request at once, on the server
    code, out = _cli(tmp_path / "dihya.toml", "audit", "purge", "--subject", STOLEN)
    assert code == 0 and "erased the subject: 7 events unlinked, 1 notes" in out, out
    assert api.get(f"/api/v1/audit/export?subject={STOLEN}", "admin").get_json() == []
    code, out = _cli(tmp_path / "dihya.toml", "audit", "verify")
    assert code == 0, out


def test_a_plugins_purge_leaves_its_recent_notes_and_log_records(
        make_api: Callable[[str], Api], later: Callable[[float], None],
        tmp_path: Path) -> None:
    api = make_api("")
    plugin = api.plugins["open"]
    store = api.app.extensions["dihya"].store
    now = time.time()
    record = PluginLogRecord(at=now, plugin=plugin, version="1", request_id=None,
                             level="INFO", template="line %s", args=[1])
    pluginlogs.write(store, [record])
    stolen = _old_and_young(api, later)
    pluginlogs.write(store, [attrs.evolve(record, at=now + 2 * DAY)])
    answer = api.client.post("/api/v1/audit/purge", headers=_bearer(stolen),
                             json={"plugin": plugin})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    counts = answer.get_json()
    assert (counts["logs"], counts["kept_logs"], counts["notes"]) == (1, 1, 1)
    assert counts["kept_events"] >= 2 and "http_purge_min_age_days" in counts["kept_reason"]
    assert _notes(api) == {"what mallory did"}
    assert [r.at for r in pluginlogs.every(store, plugin)] == [now + 2 * DAY]
    assert api.app.extensions["dihya"].auditor.log.verify().ok

    # the CLI is not limited: every record and note of the plugin goes
    code, out = _cli(tmp_path / "dihya.toml", "audit", "purge", "--plugin", plugin)
    assert code == 0 and "1 log record and 1 note removed" in out, out
    assert pluginlogs.every(store, plugin) == [] and not _notes(api)


def test_the_cli_purges_everything_whatever_the_floor(make_api: Callable[[str], Api],
                                                      later: Callable[[float], None],
                                                      tmp_path: Path) -> None:
    api = make_api("[audit]\nhttp_purge_min_age_days = 30\n")
    _old_and_young(api, later)
    problem(api.post("/api/v1/audit/purge", "admin", json={"older_than_days": 29.5}), 403)
    code, out = _cli(tmp_path / "dihya.toml", "audit", "purge", "--older-than", "0")
    assert code == 0 and out.startswith("removed "), out
    assert [e["type"] for e in _events(api)][:2] == ["audit.purged", "audit.retention"]
    code, out = _cli(tmp_path / "dihya.toml", "audit", "verify")
    assert code == 0, out


def test_a_floor_of_zero_is_the_old_behaviour(make_api: Callable[[str], Api],
                                              later: Callable[[float], None]) -> None:
    api = make_api("[audit]\nhttp_purge_min_age_days = 0\n")
    stolen = _old_and_young(api, later)
    answer = api.client.post("/api/v1/audit/purge", headers=_bearer(stolen),
                             json={"subject": STOLEN})
    counts = answer.get_json()
    assert (counts["events"], counts["notes"], counts["kept_events"], counts["floor_days"],
            counts["kept_reason"]) == (4, 2, 0, 0, None)
    # all that is linked to the subject now: its purge (recorded after the erasure)
    assert [e["type"] for e in api.get(f"/api/v1/audit/export?subject={STOLEN}",
                                       "admin").get_json()] == ["audit.purged"]
    everything = api.post("/api/v1/audit/purge", "admin", json={"older_than_days": 0})
    assert everything.status_code == 200 and everything.get_json()["events"] >= 5
    assert [e["type"] for e in _events(api)] == ["audit.purged", "audit.retention"]
    assert api.app.extensions["dihya"].auditor.log.verify().ok


def test_the_console_shows_the_floor_and_refuses_below_it(
        make_api: Callable[[str], Api]) -> None:
    from support.console import Console

    api = make_api("")
    admin = Console(api.app)
    assert admin.sign_in(api.tokens["admin"]).status_code == 303
    page = admin.get("/admin/audit").get_data(as_text=True)
    assert 'id="purge-floor-hint"' in page and "last 1 day (" in page
    refused = admin.post("/admin/audit/purge", {"older_than_days": "0.5"})
    text = refused.get_data(as_text=True)
    assert refused.status_code == 403
    assert "at least 1, not 0.5" in text and "http_purge_min_age_days" in text
    assert "dihya audit purge" in text
    denied = [e for e in _events(api) if e["type"] == "audit.purged"]
    assert [(e["outcome"], e["reason"]) for e in denied] == [("denied", "purge-floor")]
    confirmed = admin.post("/admin/audit/purge", {"older_than_days": "0.5", "confirm": "yes"})
    assert confirmed.status_code == 403  # a hand-made confirmation is refused the same way

    _act(api, api.tokens["admin"], "switched by the console's admin")
    preview = admin.post("/admin/audit/purge", {"subject": "admin-user"})
    html = preview.get_data(as_text=True)
    assert preview.status_code == 200 and 'id="purge-floor"' in html
    assert "younger than 1 day (" in html and "pseudonym mapping" in html
    done = admin.post("/admin/audit/purge", {"plugin": api.plugins["open"], "confirm": "yes"})
    assert done.status_code == 303
    notice = admin.get("/admin/audit").get_data(as_text=True)
    assert "Kept back:" in notice and "http_purge_min_age_days" in notice
    assert "switched by the console&#39;s admin" in notice or \
        "switched by the console's admin" in notice
