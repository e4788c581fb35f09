"""`dihya config init|check`, `--config` after the sub-command, and did-you-mean for plugin
names and config keys: the real `dihya` command (click's runner) on real config files."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from dihya.cli import main
from dihya.config import load_config
from dihya.config.check import check

FP = "sha256:" + "0" * 64


def dihya(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), env={"DIHYA_CONFIG": None,
                                                     "DIHYA_PLUGINS_DISABLE": None})


# -- config init ----------------------------------------------------------------------------

def test_init_writes_a_commented_valid_private_config(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "dihya.toml"
    result = dihya("config", "init", str(path))
    assert result.exit_code == 0, result.output
    assert f"wrote {path}" in result.output
    text = path.read_text()
    assert text.count("\n# ") > 10  # commented: every setting explained
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds the audit key
    config = load_config(path)
    assert config.allow == () and not config.empty and config.audit_key
    assert check(path) == []
    assert dihya("config", "check", str(path)).exit_code == 0
    # the HTTP purge floor is shown with its default; uncommented, it is valid as it is
    assert "\n# http_purge_min_age_days = 1\n" in text
    path.write_text(text.replace("# http_purge_min_age_days = 1", "http_purge_min_age_days = 1"))
    assert load_config(path).http_purge_min_age_days == 1.0 and check(path) == []
    # a second init draws another key: the key is not a constant of the template
    other = tmp_path / "other.toml"
    assert dihya("config", "init", str(other)).exit_code == 0
    assert load_config(other).audit_key != config.audit_key


def test_init_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    path = tmp_path / "dihya.toml"
    path.write_text("# mine\n[plugins]\n")
    result = dihya("config", "init", str(path))
    assert result.exit_code == 2
    assert "already exists" in result.output and "--force" in result.output
    assert path.read_text() == "# mine\n[plugins]\n"
    forced = dihya("config", "init", "--force", str(path))
    assert forced.exit_code == 0, forced.output
    assert "written by `dihya config init`" in path.read_text()


def test_init_refuses_a_directory(tmp_path: Path) -> None:
    result = dihya("config", "init", "--force", str(tmp_path))
    assert result.exit_code == 2


# -- config check ---------------------------------------------------------------------------

BROKEN = """\
# a config with a problem on several lines
[plugins]
hook_timeout = 3
auto_reload = "yes"

[sandboxx]
memory_mb = 1

[sandbox]
memory_mb = 32

[[plugins.allow]]
name = "example"
distribution = "dihya-plugin-example"
version = "1.0.0"
fingerprint = "md5:abc"
modes = "sandbox"
"""


def test_check_reports_every_problem_at_its_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "dihya.toml"
    path.write_text(BROKEN)
    result = dihya("config", "check", str(path))
    assert result.exit_code == 1
    lines = result.output.splitlines()
    expected = [
        (3, "[plugins] has an unknown key 'hook_timeout'", "did you mean 'hook_timeout_s'?"),
        (4, "[plugins] auto_reload must be true or false, not 'yes'", ""),
        (6, "unknown table [sandboxx]", "did you mean 'sandbox'?"),
        (10, "[sandbox] memory_mb must be a whole number between 64 and 65536, not 32", ""),
        (16, "[[plugins.allow]] #1 (name 'example'): `fingerprint` must look like", ""),
        (17, "[[plugins.allow]] #1 has an unknown key 'modes'", "did you mean 'mode'?"),
    ]
    for line, message, hint in expected:
        found = [x for x in lines if x.startswith(f"{path}:{line}:1: {message}")]
        assert found and hint in found[0], (line, result.output)
    assert "6 problems" in result.output


def test_check_json_lists_problems(tmp_path: Path) -> None:
    path = tmp_path / "dihya.toml"
    path.write_text("[plugins]\n  group = 3\n")
    result = dihya("config", "check", "--json", str(path))
    assert result.exit_code == 1
    problems = json.loads(result.stdout)
    assert problems == [{"file": str(path), "line": 2, "column": 3,
                         "message": "[plugins] group must be a non-empty string"}]


@pytest.mark.parametrize(("text", "line", "column", "message"), [
    ("[plugins\nx = 1\n", 1, 9, "malformed TOML: Expected ']' at the end of a table"),
    ("[plugins]\nhook_timeout_s = \n", 2, 18, "malformed TOML: Invalid value"),
    ('[plugins]\ngroup = """\n[x]\nmore"""\n[[plugins.allow]]\nnam = 1\n', 6, 1,
     "[[plugins.allow]] #1 has an unknown key 'nam'"),
    ('[web]\nrate_limit_storage = ""\n', 2, 1, "[web] rate_limit_storage must be a non-empty"),
])
def test_check_places(tmp_path: Path, text: str, line: int, column: int, message: str) -> None:
    path = tmp_path / "dihya.toml"
    path.write_text(text)
    problems = check(path)
    found = [p for p in problems if p.message.startswith(message)]
    assert found, [str(p) for p in problems]
    assert (found[0].line, found[0].column) == (line, column), str(found[0])


def test_check_names_a_duplicate_approval_at_its_table(tmp_path: Path) -> None:
    entry = ('[[plugins.allow]]\nname = "example"\ndistribution = "d"\nversion = "1"\n'
             f'fingerprint = "{FP}"\n')
    path = tmp_path / "dihya.toml"
    path.write_text("[plugins]\n" + entry + "\n" + entry)
    problems = check(path)
    assert [(p.line, p.column) for p in problems] == [(8, 1)]
    assert "allows 'example' 1 again" in problems[0].message


def test_check_defaults_to_the_config_given_before_or_after(tmp_path: Path) -> None:
    path = tmp_path / "dihya.toml"
    path.write_text("[plugins]\nautoreload = true\n")
    for args in (["--config", str(path), "config", "check"],
                 ["config", "check", "--config", str(path)]):
        result = dihya(*args)
        assert result.exit_code == 1, args
        assert f"{path}:2:1: [plugins] has an unknown key 'autoreload'" in result.output
        assert "did you mean 'auto_reload'?" in result.output


def test_check_of_a_missing_file_says_how_to_write_one(tmp_path: Path) -> None:
    path = tmp_path / "none.toml"
    result = dihya("config", "check", str(path))
    assert result.exit_code == 1
    assert f"dihya config init {path}" in result.output


# -- --config after the sub-command ---------------------------------------------------------

def test_config_after_the_sub_command_is_the_same_as_before(tmp_path: Path) -> None:
    path = tmp_path / "dihya.toml"
    path.write_text("[plugins]\nhook_timeout_s = 2.0\n")
    before = dihya("--config", str(path), "plugins", "list", "--json")
    after = dihya("plugins", "list", "--json", "--config", str(path))
    middle = dihya("plugins", "--config", str(path), "list", "--json")
    assert before.exit_code == after.exit_code == middle.exit_code == 0, after.output
    strip = [{k: v for k, v in r.items() if k != "pth"} for r in json.loads(before.stdout)]
    assert strip == [{k: v for k, v in r.items() if k != "pth"}
                     for r in json.loads(after.stdout)]
    # the path is really used: a malformed file given after the sub-command is refused
    bad = tmp_path / "bad.toml"
    bad.write_text("[plugins\n")
    refused = dihya("plugins", "list", "--config", str(bad))
    assert refused.exit_code == 2 and f"{bad}:1:9" in refused.output


def test_config_given_twice_must_agree(tmp_path: Path) -> None:
    one, two = tmp_path / "one.toml", tmp_path / "two.toml"
    for p in (one, two):
        p.write_text("[plugins]\n")
    same = dihya("--config", str(one), "plugins", "list", "--json", "--config", str(one))
    assert same.exit_code == 0, same.output
    clash = dihya("--config", str(one), "plugins", "list", "--config", str(two))
    assert clash.exit_code == 2
    assert "--config is given twice" in clash.output


def test_every_command_takes_config_after_its_name() -> None:
    missing = []

    def walk(command: object, path: str) -> None:
        import click

        assert isinstance(command, click.Command)
        if not any("--config" in p.opts for p in command.params):
            missing.append(path)
        if isinstance(command, click.Group):  # every command, those loaded on first use too
            ctx = click.Context(command)
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None, f"{path} {name}"
                walk(sub, f"{path} {name}")

    walk(main, "dihya")
    assert missing == []
    assert {"approve", "install", "rollback", "verify"} <= set(main.commands["plugins"].commands)


# -- did you mean ---------------------------------------------------------------------------

def test_a_misspelt_config_key_gets_a_suggestion_from_every_command(tmp_path: Path) -> None:
    path = tmp_path / "dihya.toml"
    path.write_text("[sandbox]\nmemroy_mb = 256\n")
    result = dihya("--config", str(path), "plugins", "list")
    assert result.exit_code == 2
    assert "did you mean 'memory_mb'?" in result.output


def _approved(tmp_path: Path) -> Path:
    path = tmp_path / "dihya.toml"
    path.write_text('[plugins]\n[[plugins.allow]]\nname = "example"\n'
                    f'distribution = "dihya-plugin-example"\nversion = "1.0.0"\n'
                    f'fingerprint = "{FP}"\n')
    return path


@pytest.mark.parametrize("command", ["enable", "disable", "revoke"])
def test_a_misspelt_approved_name_gets_a_suggestion(tmp_path: Path, command: str) -> None:
    path = _approved(tmp_path)
    before = path.read_text()
    result = dihya("--config", str(path), "plugins", command, "exampel")
    assert result.exit_code == 1
    assert "'exampel' is not in the allowlist" in result.output
    assert "did you mean 'example'?" in result.output
    assert path.read_text() == before


@pytest.mark.parametrize("command", ["show", "approve", "fingerprint"])
def test_a_misspelt_installed_name_gets_a_suggestion(plugin_site, tmp_path: Path,
                                                     command: str) -> None:
    name = plugin_site.unique("markdown-docs")
    plugin_site.install(name)  # on sys.path for this test (the fixture)
    path = _approved(tmp_path)
    result = dihya("--config", str(path), "plugins", command, name[:-1])
    assert result.exit_code == 1
    assert f"no plugin named '{name[:-1]}' is installed; did you mean '{name}'?" \
        in result.output


def test_no_suggestion_for_a_name_far_from_every_other(tmp_path: Path) -> None:
    result = dihya("--config", str(_approved(tmp_path)), "plugins", "show", "zzzzqqq")
    assert result.exit_code == 1 and "did you mean" not in result.output
