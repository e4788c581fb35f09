"""`dihya.web.serverpaths`: the texts a non-admin role is shown name files, not paths.

The web tests (tests/web/test_server_paths.py) check the answers end to end; these check
the filter on the texts it meets and on what should not be mistaken for a path."""

from __future__ import annotations

import site
from pathlib import Path

from dihya.web.serverpaths import file_names_only, for_role, keep_paths, plugin_row, report_for


def test_an_admin_keeps_every_path() -> None:
    assert for_role("admin", Path("/etc/dihya/dihya.toml")) is keep_paths
    text = "enabled = false in /etc/dihya/dihya.toml: broken"
    assert keep_paths(text) == text


def test_other_roles_get_file_names(tmp_path: Path) -> None:
    config = tmp_path / "my conf" / "dihya.toml"  # a directory with a space
    paths = for_role("viewer", config)
    assert for_role("developer", config)(f"x {config}") == "x dihya.toml"
    assert paths(f"not in the allowlist of {config}; approve it with "
                 "`dihya plugins approve acme/pdf`") == \
        "not in the allowlist of dihya.toml; approve it with `dihya plugins approve acme/pdf`"
    where = site.getsitepackages()[0]
    assert paths(f"{where}/evil.pth (root) runs code at interpreter start") == \
        "evil.pth (root) runs code at interpreter start"
    assert paths(f"module 'm' would be imported from {where}/m/__init__.py, not from the "
                 f"plugin's own {where}/m.py") == \
        "module 'm' would be imported from m/__init__.py, not from the plugin's own m.py"
    # anywhere else: the last component, wherever the path stands in the sentence
    assert paths("FileNotFoundError: [Errno 2] No such file or directory: "
                 "'/srv/data/x.csv'") == \
        "FileNotFoundError: [Errno 2] No such file or directory: 'x.csv'"
    assert paths("user nobody cannot read /opt/models (mode 0700)") == \
        "user nobody cannot read models (mode 0700)"
    assert paths(f"{config.parent}/other.toml, /a/b/c.txt;/d/e") == "other.toml, c.txt;e"


def test_what_is_no_absolute_path_is_left_alone() -> None:
    paths = file_names_only([])
    for text in ("disabled by an admin: see ticket 12/34", "acme/pdf is quarantined",
                 "https://example.com/a/b", "./relative/x and ../up/y and ~/.cache/z",
                 "installed 1.0/2.0", "a / b", ""):
        assert paths(text) == text


def test_rows_and_reports_keep_their_fields(tmp_path: Path) -> None:
    paths = for_role("viewer", tmp_path / "dihya.toml")
    row = {"name": "x", "message": f"in {tmp_path}/dihya.toml", "reason": "r",
           "warnings": [f"user nobody cannot read {tmp_path}/data"], "description": "/a/b"}
    shown = plugin_row(dict(row), paths)
    assert shown == {**row, "message": "in dihya.toml",
                     "warnings": ["user nobody cannot read data"]}
    report = {"plugins": [{"name": "x", "hook": "h", "status": "failed", "ms": 1.0,
                           "detail": "OSError: /srv/a/b"},
                          {"name": "y", "hook": "h", "status": "ok", "ms": 1.0}],
              "needs_sha256": "0" * 64}
    assert report_for(report, paths)["plugins"] == [
        {"name": "x", "hook": "h", "status": "failed", "ms": 1.0, "detail": "OSError: b"},
        {"name": "y", "hook": "h", "status": "ok", "ms": 1.0}]
    assert plugin_row(dict(row), keep_paths) == row
