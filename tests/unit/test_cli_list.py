"""`plugins list`'s table: names kept whole on narrow terminals, weaker isolation marked and
explained below the table (a real registry of the installed plugins; the warnings are what
a worker missing a layer reports)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import attrs
from rich.console import Console

from dihya.cli.plugins import ISOLATION_MARK, isolation_notes, plugin_table
from dihya.config import load_config
from dihya.registry import RegistrySnapshot, build_registry

WARNING = ("no outer isolation: bwrap unavailable: bwrap is not installed; unshare "
           "unavailable: unshare is not installed")


def snapshot(plugin_site: Any, tmp_path: Path) -> tuple[RegistrySnapshot, str, str]:
    """A registry of two plugins installed from wheels (one with a long name); the first
    marked as a worker started without bubblewrap reports it."""
    short, long = plugin_site.unique("example"), plugin_site.unique("markdown-docs-renderer")
    for name in (short, long):
        plugin_site.install(name)
    path = tmp_path / "dihya.toml"
    path.write_text("[plugins]\n")
    built = build_registry(load_config(path), path=plugin_site.path)
    assert {short, long} <= set(built.names())
    records = tuple(attrs.evolve(r, warnings=(WARNING,)) if r.name == short else r
                    for r in built.records)
    return attrs.evolve(built, records=records), short, long


def render(table: object, width: int) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(table)
    return console.export_text()


def test_narrow_table_keeps_names_whole_and_marks_weaker_isolation(plugin_site: Any,
                                                                   tmp_path: Path) -> None:
    snap, short, long = snapshot(plugin_site, tmp_path)
    text = render(plugin_table(snap, 80), 80)
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines)
    example = next(line for line in lines if short in line)
    assert ISOLATION_MARK in example
    markdown = next(line for line in lines if long in line)  # the whole name on one line
    assert ISOLATION_MARK not in markdown
    assert "distribution" not in text  # those columns go below 120 columns
    notes = isolation_notes(snap)
    assert notes == [f"{ISOLATION_MARK} {short} runs with weaker isolation: {WARNING} "
                     "(`dihya doctor` says how to fix it)"]


def test_wide_table_has_every_column(plugin_site: Any, tmp_path: Path) -> None:
    snap, _short, long = snapshot(plugin_site, tmp_path)
    text = render(plugin_table(snap, 160), 160)
    assert "distribution" in text and f"dihya-plugin-{long}" in text
    assert "more: `plugins show NAME`" not in text
