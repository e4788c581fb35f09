"""Dihya generation plugins: the gated, audited plugin ecosystem of Dihya Coding.

The public API for plugin authors is what this package exports (`__all__`): the plugin
contract (`GenerationPluginBase`, `action`, the hook specs), the needs and code checks
the core applies, and the core generator with its naming rules (to find generated files).
Everything else is the core's own and may change in any release; `dihya.testing` has the
test helpers. The needs and generator names load on first use, so `import dihya` stays
cheap for the `dihya` command and sandbox workers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dihya.plugin import (
    ACTION_SPEC,
    HOOK_API_VERSION,
    HOOK_SPECS,
    ActionSpec,
    GenerationPluginBase,
    HookArg,
    HookSpec,
    InvalidPluginError,
    action,
    hook_arguments,
    implemented_hooks,
    plugin_actions,
    validate_plugin_class,
)

if TYPE_CHECKING:
    from dihya.generator import generate
    from dihya.generator.naming import api_module_path, collection_path, snake_case
    from dihya.needs import (
        NeedsError,
        Problem,
        check_needs,
        needs_schema,
        validate_code,
        validate_needs,
    )

__all__ = [
    "ACTION_SPEC",
    "HOOK_API_VERSION",
    "HOOK_SPECS",
    "ActionSpec",
    "GenerationPluginBase",
    "HookArg",
    "HookSpec",
    "InvalidPluginError",
    "NeedsError",
    "Problem",
    "__version__",
    "action",
    "api_module_path",
    "check_needs",
    "collection_path",
    "generate",
    "hook_arguments",
    "implemented_hooks",
    "needs_schema",
    "plugin_actions",
    "snake_case",
    "validate_code",
    "validate_needs",
    "validate_plugin_class",
]

__version__ = "0.1.0"

# name -> module, imported on first access (PEP 562)
_LAZY = {
    "NeedsError": "dihya.needs", "Problem": "dihya.needs", "check_needs": "dihya.needs",
    "needs_schema": "dihya.needs", "validate_code": "dihya.needs",
    "validate_needs": "dihya.needs", "generate": "dihya.generator",
    "api_module_path": "dihya.generator.naming", "collection_path": "dihya.generator.naming",
    "snake_case": "dihya.generator.naming",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dihya' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
