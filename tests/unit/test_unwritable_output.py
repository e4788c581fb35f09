"""Plugin output that cannot be written is that plugin's failure, never the generation's.

A path through another file of the output, a file name over 255 bytes, a lone surrogate in
a path or in a content: each passed validation before and then aborted `dihya generate`
with a traceback while writing. Now validation refuses it (`invalid-output`), the plugin's
contribution is dropped, the generation goes on and its output is written.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from dihya.cli import main
from dihya.config.edit import read_document, upsert_allow, write_document
from dihya.needs import MAX_SEGMENT_BYTES, unsafe_path_reason, validate_code
from dihya.output import write_tree
from dihya.pipeline import run_generation
from dihya.registry import build_registry
from support.bad_outputs import BAD_OUTPUTS, BAD_PLUGIN
from support.wheels import plugin_source


@pytest.mark.parametrize(("code", "fragment"), [
    ({"README.md": "", "README.md/child.txt": ""}, "goes through 'README.md'"),
    ({"a/b": "", "a/b/c/d.txt": ""}, "goes through 'a/b'"),
    ({"x" * 256: ""}, "256 bytes"),
    ({"d/" + "\u00e9" * 128: ""}, "256 bytes"),
    ({"bad\ud800.txt": ""}, "lone surrogate U+D800"),
    ({"ok.txt": "a\udc80b"}, "lone surrogate U+DC80 at character 1"),
])
def test_validation_refuses_what_cannot_be_written(code: dict, fragment: str) -> None:
    problems = validate_code(code)
    assert problems and fragment in str(problems[0]), problems


def test_the_limits_themselves_are_writable(tmp_path: Path) -> None:
    code = {"x" * MAX_SEGMENT_BYTES: "a", "d/" + "\u00e9" * 127 + "x": "b",
            "a/b.txt": "\U0001f600 ok", "a/c/d.txt": "", "README.md": ""}
    assert validate_code(code) == []
    assert write_tree(code, tmp_path / "out").files == sorted(code)
    assert unsafe_path_reason("a" * MAX_SEGMENT_BYTES) is None


def test_in_process_plugin_with_each_bad_output_is_skipped(plugin_site, needs,
                                                           tmp_path: Path) -> None:
    name = plugin_site.unique()
    plugin_site.install(name, source=plugin_source(name, body=BAD_PLUGIN))
    snapshot = build_registry(plugin_site.config(plugin_site.entry(name)), path=plugin_site.path)
    assert snapshot.get(name).active
    without = build_registry(plugin_site.config(), path=plugin_site.path)
    for kind, (_, detail) in BAD_OUTPUTS.items():
        case = dict(needs, project=kind)
        result = run_generation(case, snapshot)
        (report,) = result.plugins
        assert (report.name, report.status) == (name, "invalid-output"), kind
        assert detail in (report.detail or ""), (kind, report.detail)
        assert result.files == run_generation(case, without).files
        write_tree(result.files, tmp_path / kind)  # what is left is writable


def test_cli_generate_reports_and_writes_without_the_plugin(plugin_site, needs,
                                                            tmp_path: Path) -> None:
    name = plugin_site.unique()
    plugin_site.install(name, source=plugin_source(name, body=BAD_PLUGIN))
    config = tmp_path / "dihya.toml"
    doc = read_document(config)
    upsert_allow(doc, plugin_site.entry(name))  # in-process: runs in this very process
    write_document(config, doc)
    for kind in BAD_OUTPUTS:
        needs_file = tmp_path / f"{kind}.json"
        needs_file.write_text(json.dumps(dict(needs, project=kind)))
        out = tmp_path / "out" / kind
        result = CliRunner().invoke(main, ["--config", str(config), "generate",
                                           str(needs_file), "-o", str(out), "--json"])
        assert result.exit_code == 0, (kind, result.output)
        assert result.exception is None and "Traceback" not in result.output
        report = json.loads(result.stdout)
        assert [(h["name"], h["status"]) for h in report["plugins"]] == [
            (name, "invalid-output")]
        assert (out / "README.md").is_file() and not (out / "ok.txt").exists()


def test_cli_generate_turns_a_write_error_into_one_line(needs, tmp_path: Path) -> None:
    needs_file = tmp_path / "needs.json"
    needs_file.write_text(json.dumps(needs))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    config = tmp_path / "dihya.toml"
    config.write_text("[plugins]\n")
    result = CliRunner().invoke(main, ["--config", str(config), "generate", str(needs_file),
                                       "-o", str(blocker / "out")])
    assert result.exit_code == 1, result.output
    assert not isinstance(result.exception, OSError)  # handled, not raised to the top
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("Error:")]
    assert str(blocker) in line and "is as it was" in line
