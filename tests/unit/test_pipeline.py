"""The generation pipeline with real installed plugins: order, copies, validation, failures."""

from __future__ import annotations

import pytest

from dihya.needs import NeedsError
from dihya.pipeline import GenerationFailed, run_generation
from dihya.registry import build_registry
from support.wheels import plugin_source


def snapshot_with(plugin_site, bodies: dict[str, str], timeout: float = 2.0,
                  priorities: dict[str, int] | None = None, **entry_overrides):
    names = {}
    for key, body in bodies.items():
        name = plugin_site.unique(key)
        names[key] = name
        prio = (priorities or {}).get(key, 100)
        plugin_site.install(name, source=plugin_source(name, body=body, priority=prio))
    entries = [plugin_site.entry(n, **entry_overrides.get(k, {})) for k, n in names.items()]
    snap = build_registry(plugin_site.config(*entries, timeout=timeout), path=plugin_site.path)
    mine = [snap.get(n) for n in names.values()]
    assert all(r.status == "active" for r in mine), [r.message for r in mine]
    return snap, names


def hook(body: str, name: str = "after_generation") -> str:
    args = "self, needs" if name == "before_generation" else "self, code, needs"
    return f"\ndef {name}({args}):\n" + "".join(f"    {line}\n" for line in body.splitlines())


def test_hooks_run_in_priority_order_and_chain(plugin_site, needs) -> None:
    snap, names = snapshot_with(plugin_site, {
        "late": hook('code["order.txt"] = code.get("order.txt", "") + "late\\n"\nreturn code'),
        "early": hook('code["order.txt"] = code.get("order.txt", "") + "early\\n"\nreturn code'),
    }, priorities={"early": 1, "late": 2})
    result = run_generation(needs, snap)
    assert result.files["order.txt"] == "early\nlate\n"
    assert [h.name for h in result.plugins] == [names["early"], names["late"]]
    assert all(h.status == "ok" and h.ms >= 0 for h in result.plugins)


def test_before_generation_changes_what_is_generated(plugin_site, needs) -> None:
    body = 'needs["entities"][0]["name"] = "Product"\nreturn needs'
    snap, _ = snapshot_with(plugin_site, {"rename": hook(body, "before_generation")})
    result = run_generation(needs, snap)
    assert any("product" in path for path in result.files)
    assert needs["entities"][0]["name"] == "Item", "the caller's needs were changed"


def test_a_plugin_mutating_its_copy_in_place_affects_nobody(plugin_site, needs) -> None:
    snap, names = snapshot_with(plugin_site, {
        "vandal": hook('code.clear()\nneeds.clear()\nraise RuntimeError("boom")'),
        "witness": hook('code["seen.txt"] = str(len(code))\nreturn code'),
    }, priorities={"vandal": 1, "witness": 2})
    result = run_generation(needs, snap)
    statuses = {h.name: h.status for h in result.plugins}
    assert statuses == {names["vandal"]: "failed", names["witness"]: "ok"}
    assert int(result.files["seen.txt"]) > 5


@pytest.mark.parametrize(("body", "status", "detail"), [
    ('return "not a dict"', "invalid-output", "object mapping paths"),
    ('code["../escape.py"] = "x"\nreturn code', "invalid-output", ".."),
    ('code["/etc/passwd"] = "x"\nreturn code', "invalid-output", "absolute"),
    ('code["big.txt"] = "x" * (1024 * 1024 + 1)\nreturn code', "invalid-output", "larger"),
    ('code["n.txt"] = 42\nreturn code', "invalid-output", "text"),
    ('raise ValueError("nope")', "failed", "ValueError: nope"),
    ('import time\ntime.sleep(0.3)\nreturn code', "timeout", "limit"),
])
def test_bad_after_hook_is_skipped_and_reported(plugin_site, needs, body, status, detail) -> None:
    snap, names = snapshot_with(plugin_site, {"bad": hook(body)}, timeout=0.2)
    baseline = run_generation(needs, build_registry(plugin_site.config(), path=plugin_site.path))
    result = run_generation(needs, snap)
    (report,) = result.plugins
    assert (report.name, report.status) == (names["bad"], status)
    assert detail in report.detail
    assert result.files == baseline.files


def test_invalid_needs_from_before_hook_is_skipped(plugin_site, needs) -> None:
    body = 'needs["project"] = "Not A Slug"\nreturn needs'
    snap, _ = snapshot_with(plugin_site, {"bad": hook(body, "before_generation")})
    result = run_generation(needs, snap)
    assert result.plugins[0].status == "invalid-output"
    assert "$.project" in result.plugins[0].detail


def test_required_plugin_failure_fails_the_generation(plugin_site, needs) -> None:
    snap, names = snapshot_with(plugin_site, {
        "must": hook('raise RuntimeError("down")'),
        "watch": hook("self.__class__.errors = getattr(self.__class__, 'errors', 0) + 1",
                      "on_generation_error").replace("self, code, needs", "self, error, needs"),
    }, must={"required": True})
    with pytest.raises(GenerationFailed) as info:
        run_generation(needs, snap)
    assert "required plugin" in str(info.value)
    hooks = {(h.name, h.hook): h.status for h in info.value.plugins}
    assert hooks[(names["must"], "after_generation")] == "failed"
    assert hooks[(names["watch"], "on_generation_error")] == "ok"


def test_roles_skip_plugins_the_caller_may_not_run(plugin_site, needs) -> None:
    snap, names = snapshot_with(plugin_site, {"admins": hook("return code")},
                                admins={"roles": ("admin",)})
    as_dev = run_generation(needs, snap, role="developer")
    assert [(h.name, h.status, h.detail) for h in as_dev.plugins] == [
        (names["admins"], "skipped", "acl")]
    as_admin = run_generation(needs, snap, role="admin")
    assert as_admin.plugins[0].status == "ok"


def test_invalid_needs_list_every_problem(plugin_site) -> None:
    snap = build_registry(plugin_site.config(), path=plugin_site.path)
    with pytest.raises(NeedsError) as info:
        run_generation({"project": "X", "stack": "flask-api", "entities": []}, snap)
    paths = {p.path for p in info.value.problems}
    assert paths == {"$.project", "$.entities"}


def test_on_generation_error_is_told_which_plugin_failed(plugin_site, needs, tmp_path) -> None:
    seen = tmp_path / "seen.json"
    watch = hook(f"import json\nopen({str(seen)!r}, 'w').write(json.dumps(error))",
                 "on_generation_error").replace("self, code, needs", "self, error, needs")
    snap, names = snapshot_with(plugin_site, {"must": hook("return 42"), "watch": watch},
                                must={"required": True})
    with pytest.raises(GenerationFailed):
        run_generation(needs, snap)
    import json

    assert json.loads(seen.read_text()) == {"stage": "plugin", "type": "invalid-output",
                                            "plugin": names["must"]}


def test_required_plugin_that_is_not_active_fails_before_any_hook(plugin_site, needs) -> None:
    snap, names = snapshot_with(plugin_site, {"must": hook("return code")},
                                must={"required": True})
    from dihya.registry import build_registry as rebuild

    disabled = rebuild(snap.config, environ={"DIHYA_PLUGINS_DISABLE": names["must"]},
                       path=plugin_site.path)
    with pytest.raises(GenerationFailed, match="disabled/disabled-by-env") as info:
        run_generation(needs, disabled)
    assert [(h.name, h.status) for h in info.value.plugins] == [(names["must"], "skipped")]


def test_a_plugin_approved_in_two_versions_is_reported_once(plugin_site, needs) -> None:
    """Two allow entries (the running version and the next, pre-approved) for a plugin that
    is not installed: one `skipped` row, not one per entry."""
    from dihya.config import AllowEntry, Config

    entries = tuple(AllowEntry(name="absent", distribution="dihya-plugin-absent", version=v,
                               fingerprint="sha256:" + c * 64, mode="in-process")
                    for v, c in (("1.0.0", "1"), ("2.0.0", "2")))
    snap = build_registry(Config(path=plugin_site.root / "dihya.toml", exists=False,
                                 allow=entries), path=plugin_site.path)
    result = run_generation(needs, snap)
    assert [(h.name, h.hook, h.status, h.detail) for h in result.plugins] == [
        ("absent", "*", "skipped", "not-installed")]
