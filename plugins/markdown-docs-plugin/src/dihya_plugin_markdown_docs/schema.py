"""The input schema of the `preview` action: `{"needs": <the core's needs schema>}`.

A module of its own, without markdown-it-py: the plugin class names it when it is defined
(`@action(..., input_schema=...)`), so every load of the plugin builds it, in a sandbox
worker at every start; the renderer (`preview`) is imported when the action is called.
"""

from __future__ import annotations

import copy
from typing import Any, Final

from dihya import needs_schema

_DEFS_PREFIX: Final = "needs-"


def _rewrite_refs(node: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref":
                if not (isinstance(value, str) and value.startswith("#/$defs/")):
                    raise ValueError(f"cannot embed the needs schema: unsupported $ref {value!r}")
                out[key] = "#/$defs/" + _DEFS_PREFIX + value[len("#/$defs/"):]
            else:
                out[key] = _rewrite_refs(value)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(item) for item in node]
    return node


def preview_input_schema() -> dict[str, Any]:
    """`{"needs": <the needs schema>}`, with the needs schema's `$defs` hoisted."""
    needs = copy.deepcopy(needs_schema())
    defs = needs.pop("$defs", {})
    for key in ("$schema", "$id", "$anchor", "$dynamicAnchor"):
        needs.pop(key, None)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["needs"],
        "additionalProperties": False,
        "properties": {"needs": _rewrite_refs(needs)},
        "$defs": {_DEFS_PREFIX + name: _rewrite_refs(sub) for name, sub in defs.items()},
    }


PREVIEW_INPUT_SCHEMA: Final = preview_input_schema()
