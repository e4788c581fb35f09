"""A sandbox worker is told which distribution to load and checks that one only, still
hashing its files before importing anything (real wheels, real worker processes)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dihya.gate.decide import inspect_files
from dihya.sandbox.pool import Worker, WorkerSpec, WorkerStartError
from support.wheels import GROUP, plugin_source


def _spec(plugin_site, name: str, dist_info: str | None = None) -> WorkerSpec:
    plugin = next(p for p in plugin_site.discover() if p.name == name)
    files, problem = inspect_files(plugin)
    assert problem is None and files is not None
    return WorkerSpec(GROUP, name, files.fingerprint, (str(plugin_site.site),),
                      dist_info if dist_info is not None else os.fspath(plugin.dist_info))


def _settings(plugin_site):
    return plugin_site.config(timeout=5.0).sandbox


def test_worker_reads_no_other_distribution(plugin_site) -> None:
    """Another distribution on the path whose entry_points.txt is a FIFO: discovering every
    distribution would block on it; the worker told its own never opens it."""
    name = plugin_site.unique()
    plugin_site.install(name)
    spec = _spec(plugin_site, name)
    other = plugin_site.site / "zz_stranger-1.0.dist-info"
    other.mkdir()
    (other / "METADATA").write_text("Metadata-Version: 2.1\nName: zz-stranger\nVersion: 1.0\n")
    os.mkfifo(other / "entry_points.txt")
    worker = Worker(spec, _settings(plugin_site))
    try:
        assert worker.hello.meta["name"] == name
    finally:
        worker.close()


def test_worker_still_hashes_the_files_before_importing(plugin_site, tmp_path: Path) -> None:
    name = plugin_site.unique()
    marker = tmp_path / "imported"
    plugin_site.install(name, source=f"open({str(marker)!r}, 'w').close()\n"
                        + plugin_source(name))
    spec = _spec(plugin_site, name)
    module = plugin_site.site / f"dihya_plugin_{name}" / "__init__.py"
    module.write_text(module.read_text() + "# changed after the backend's gate\n")
    with pytest.raises(WorkerStartError) as caught:
        Worker(spec, _settings(plugin_site))
    assert caught.value.reason == "fingerprint-mismatch"
    assert not marker.exists(), "the worker imported files it had not verified"


def test_worker_told_a_distribution_without_the_plugin_refuses(plugin_site) -> None:
    name, other = plugin_site.unique(), plugin_site.unique()
    plugin_site.install(name)
    plugin_site.install(other)
    wrong = next(p for p in plugin_site.discover() if p.name == other).dist_info
    with pytest.raises(WorkerStartError) as caught:
        Worker(_spec(plugin_site, name, os.fspath(wrong)), _settings(plugin_site))
    assert caught.value.reason == "sandbox-start-failed"
    assert "no longer declares the plugin" in caught.value.message
