"""A sandboxed plugin returning output that cannot be written: `invalid-output`, contained.

The same bad outputs as the in-process test (`tests/unit/test_unwritable_output.py`), from a
real plugin in a real worker: some cross the pipe and fail validation, a lone surrogate
cannot even be sent as JSON; either way the plugin is skipped and the generation goes on.
"""

from __future__ import annotations

from pathlib import Path

from sandbox_support import sandboxed

from dihya.output import write_tree
from dihya.pipeline import run_generation
from dihya.registry import build_registry
from support.bad_outputs import BAD_OUTPUTS, BAD_PLUGIN


def test_sandboxed_plugin_with_each_bad_output_is_skipped(plugin_site, needs, closing,
                                                          tmp_path: Path) -> None:
    snap, names = sandboxed(plugin_site, {"bad": BAD_PLUGIN})
    closing(snap)
    name = names["bad"]
    assert snap.get(name).status == "active", snap.get(name).message
    without = build_registry(plugin_site.config(), path=plugin_site.path)
    for kind, (_, detail) in BAD_OUTPUTS.items():
        case = dict(needs, project=kind)
        result = run_generation(case, snap)
        (report,) = result.plugins
        assert (report.name, report.status) == (name, "invalid-output"), (kind, report.detail)
        if "surrogate" not in kind:  # those never leave the worker: it says why
            assert detail in (report.detail or ""), (kind, report.detail)
        assert result.files == run_generation(case, without).files
        write_tree(result.files, tmp_path / kind)
    assert name in snap.sandbox.running(), "an invalid output must not cost the worker"
