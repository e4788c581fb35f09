"""Reading the backend config: `[plugins]` keys and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from dihya.config import ConfigError, config_problem, load_config


def test_auto_reload_is_off_unless_set(tmp_path: Path) -> None:
    path = tmp_path / "dihya.toml"
    path.write_text("[plugins]\nhook_timeout_s = 1.0\n")
    assert load_config(path).auto_reload is False
    path.write_text("[plugins]\nauto_reload = true\n")
    assert load_config(path).auto_reload is True


@pytest.mark.parametrize(("text", "message"), [
    ('[plugins]\nauto_reload = "yes"\n', "[plugins] auto_reload must be true or false, not 'yes'"),
    ("[plugins]\nautoreload = true\n",
     "unknown keys ['autoreload']; known: allow, auto_reload, group, hook_timeout_s, "
     "known_pth, log_record_bytes, log_records, publishers"),
])
def test_a_wrong_auto_reload_is_refused_with_the_fix(tmp_path: Path, text: str,
                                                     message: str) -> None:
    path = tmp_path / "dihya.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value) and str(path) in str(info.value)


# -- two tables for one plugin -------------------------------------------------------------

ENTRY = ('[[plugins.allow]]\nname = "{name}"\ndistribution = "dihya-plugin-{name}"\n'
         'version = "{version}"\nfingerprint = "sha256:{fp}"\n{extra}\n')


def entry(name: str, version: str = "1.0.0", fp: str = "0" * 64, extra: str = "") -> str:
    return ENTRY.format(name=name, version=version, fp=fp, extra=extra)


def test_two_tables_for_one_plugin_and_version_name_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "dihya.toml"
    path.write_text("# note\n[plugins]\n\n" + entry("a") + entry("b")
                    + "  " + entry("a", fp="1" * 64, extra="enabled = false"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    # the second table's header is on line 16 (indented by two spaces), the first on line 4
    assert message.startswith(f"{path}:16:3: [[plugins.allow]] #3 allows 'a' 1.0.0 again, "
                              f"already allowed by #1 at {path}:4:1"), message
    assert "Keep one table per plugin name and version" in message


def test_one_plugin_in_two_versions_is_not_a_duplicate(tmp_path: Path) -> None:
    """The next version may be approved before it is installed (the gate takes the entry of
    the installed version)."""
    path = tmp_path / "dihya.toml"
    path.write_text("[plugins]\n" + entry("a") + entry("a", "2.0.0", "1" * 64))
    assert [e.version for e in load_config(path).allow] == ["1.0.0", "2.0.0"]


def test_duplicates_in_an_inline_array_are_named_by_position(tmp_path: Path) -> None:
    path = tmp_path / "dihya.toml"
    one = ('{name = "a", distribution = "d", version = "1", fingerprint = "sha256:0"}')
    path.write_text(f"[plugins]\nallow = [{one}, {one}]\n")
    with pytest.raises(ConfigError, match=r"#2 allows 'a' 1 again, already allowed by #1"):
        load_config(path)


# -- empty, missing, and configs a running server must not take --------------------------

@pytest.mark.parametrize(("text", "empty"), [
    ("", True), ("\n  \n\t\n", True), ("# all gone\n# really\n", True),
    ("[plugins]\n", False), ("# note\n[plugins]\nallow = []\n", False),
    ('[web]\nrate_limit = "5/minute"\n', False),
])
def test_a_config_with_no_table_and_no_key_is_empty(tmp_path: Path, text: str,
                                                    empty: bool) -> None:
    path = tmp_path / "dihya.toml"
    path.write_text(text)
    config = load_config(path)
    assert (config.exists, config.empty, config.allow) == (True, empty, ())
    assert config_problem(config, None) == ("empty-config" if empty else None)


def test_which_configs_a_running_server_does_not_take(tmp_path: Path) -> None:
    path = tmp_path / "dihya.toml"
    path.write_text("[plugins]\n" + entry("a"))
    running = load_config(path)
    missing = load_config(tmp_path / "gone.toml")
    assert config_problem(missing, running) == config_problem(missing, None) == "missing-config"
    path.write_text("[plugins]\nhook_timeout_s = 3\n")
    dropped = load_config(path)
    assert (dropped.allow_declared, config_problem(dropped, running)) == (
        False, "allowlist-dropped")
    assert config_problem(dropped, None) is None  # nothing was approved: nothing to lose
    assert config_problem(dropped, dropped) is None
    path.write_text("[plugins]\nallow = []  # nothing approved, on purpose\n")
    on_purpose = load_config(path)
    assert (on_purpose.allow_declared, config_problem(on_purpose, running)) == (True, None)


def test_an_unreadable_config_says_so(tmp_path: Path) -> None:
    path = tmp_path / "dihya.toml"
    path.mkdir()
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.reason == "unreadable-config" and "cannot read" in str(info.value)
    (tmp_path / "bad.toml").write_text("[plugins\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "bad.toml")
    assert info.value.reason == "invalid-config"


@pytest.mark.parametrize(("text", "message"), [
    ("[plugins]\nlog_records = 5000\n",
     "[plugins] log_records must be a whole number between 0 and 1000, not 5000"),
    ("[plugins]\nlog_record_bytes = 10\n",
     "[plugins] log_record_bytes must be a whole number between 256 and 16384, not 10"),
    ('[audit]\nplugin_log_retention_days = "30"\n',
     "[audit] plugin_log_retention_days must be a number of days between 0 and 36500, "
     "not '30'"),
])
def test_plugin_log_settings_are_checked(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "dihya.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)


@pytest.mark.parametrize("value", ["-1", '"1"', "true", "nan", "36501", "[1]"])
def test_the_http_purge_floor_is_a_number_of_days(tmp_path: Path, value: str) -> None:
    path = tmp_path / "dihya.toml"
    path.write_text(f"[audit]\nhttp_purge_min_age_days = {value}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "[audit] http_purge_min_age_days must be a number of days between 0 (no floor) " \
           "and 36500, not " in str(info.value)
    assert info.value.reason == "invalid-config"


def test_the_http_purge_floor_defaults_to_a_day_and_may_be_zero(tmp_path: Path) -> None:
    path = tmp_path / "dihya.toml"
    path.write_text("")
    assert load_config(path).http_purge_min_age_days == 1.0
    path.write_text("[audit]\nhttp_purge_min_age_days = 0\n")
    assert load_config(path).http_purge_min_age_days == 0.0
    path.write_text("[audit]\nhttp_purge_min_age_days = 7.5\n")
    assert load_config(path).http_purge_min_age_days == 7.5


def test_plugin_log_settings_have_defaults_and_are_read(tmp_path: Path) -> None:
    path = tmp_path / "dihya.toml"
    path.write_text("[plugins]\nlog_records = 10\nlog_record_bytes = 300\n"
                    "[audit]\nplugin_log_retention_days = 7\n")
    config = load_config(path)
    assert (config.plugin_log_records, config.plugin_log_bytes,
            config.plugin_log_retention_days) == (10, 300, 7.0)
    path.write_text("")
    config = load_config(path)
    assert (config.plugin_log_records, config.plugin_log_bytes,
            config.plugin_log_retention_days) == (200, 2000, 30.0)
