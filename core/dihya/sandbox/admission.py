"""Load sandbox-mode plugins in their workers and check what the workers report.

The backend never imports a sandbox-mode plugin: its worker loads it (through the same
gate) and reports the class's metadata, which is untrusted input and validated here as
strictly as a class would be in-process.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from dihya.plugin import HOOKS_BY_NAME, ActionSpec
from dihya.reasons import Reason
from dihya.sandbox.pool import Hello, SandboxPool, WorkerSpec, WorkerStartError

_ACTION_NAME: Final = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_METHOD: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
MAX_PARALLEL_STARTS: Final = 8


def start_all(pool: SandboxPool, specs: Sequence[WorkerSpec]
              ) -> dict[str, Hello | WorkerStartError]:
    """Start every worker (a few at a time); a failure is returned, not raised."""

    def start(spec: WorkerSpec) -> Hello | WorkerStartError:
        try:
            return pool.start(spec)
        except WorkerStartError as exc:
            return exc
        except OSError as exc:
            return WorkerStartError(Reason.SANDBOX_START_FAILED, f"cannot start a worker: {exc}")

    if not specs:
        return {}
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_STARTS, len(specs))) as threads:
        return dict(zip((s.name for s in specs), threads.map(start, specs), strict=True))


def checked_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """The record fields from a worker's metadata; ValueError when it breaks the contract."""
    hooks = meta.get("hooks")
    if not isinstance(hooks, list) or not all(h in HOOKS_BY_NAME for h in hooks):
        raise ValueError("the worker reported unknown hooks")
    raw_args = meta.get("hook_args")
    if not isinstance(raw_args, dict) or set(raw_args) != set(hooks) or not all(
            isinstance(names, list) and set(names) <= set(HOOKS_BY_NAME[h].arg_names)
            for h, names in raw_args.items()):
        raise ValueError("the worker reported bad hook arguments")
    deprecations = meta.get("deprecations", [])
    if not isinstance(deprecations, list) or not all(
            isinstance(d, str) and len(d) <= 500 for d in deprecations) or len(deprecations) > 50:
        raise ValueError("the worker reported bad deprecation warnings")
    for key, kind in (("safe", bool), ("priority", int), ("description", str),
                      ("author", str), ("version", str)):
        value = meta.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"the worker reported a bad `{key}`")
    actions: dict[str, ActionSpec] = {}
    raw_actions = meta.get("actions", {})
    if not isinstance(raw_actions, dict):
        raise ValueError("the worker reported bad actions")
    for name, spec in raw_actions.items():
        if (not isinstance(name, str) or not _ACTION_NAME.match(name)
                or not isinstance(spec, dict) or not isinstance(spec.get("method"), str)
                or not _METHOD.match(spec["method"]) or spec["method"].startswith("_")
                or not isinstance(spec.get("input_schema"), dict)
                or not isinstance(spec.get("description", ""), str)):
            raise ValueError(f"the worker reported a bad action {name!r}")
        import jsonschema

        try:
            jsonschema.Draft202012Validator.check_schema(spec["input_schema"])
        except jsonschema.SchemaError as exc:
            raise ValueError(f"action {name!r} has an invalid input schema: "
                             f"{exc.message}"[:500]) from exc
        actions[name] = ActionSpec(name, spec["method"], spec.get("description", ""),
                                   spec["input_schema"])
    hook_args = {h: tuple(n for n in HOOKS_BY_NAME[h].arg_names if n in raw_args[h])
                 for h in HOOKS_BY_NAME if h in hooks}
    return {"hooks": tuple(h for h in HOOKS_BY_NAME if h in hooks), "hook_args": hook_args,
            "deprecations": tuple(deprecations), "safe": meta["safe"],
            "priority": meta["priority"], "description": meta["description"],
            "author": meta["author"], "actions": dict(sorted(actions.items()))}
