"""Naming conventions of generated code, shared by the core generator and plugins.

Public: plugins that document or extend generated projects (e.g. markdown-docs) import
these so their paths and names always match what the generator wrote.
"""

from __future__ import annotations

import re

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def snake_case(name: str) -> str:
    """`TaskItem` -> `task_item`, `HTTPLog` -> `http_log`, `due_on` -> `due_on`."""
    return _CAMEL_BOUNDARY.sub("_", name).lower()


def class_name(name: str) -> str:
    """`task_item` -> `TaskItem`; an already CamelCase name is kept."""
    if "_" not in name and name[:1].isupper():
        return name
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


def plural(word: str) -> str:
    """A plain English plural, good enough for URL paths: task -> tasks, box -> boxes."""
    if re.search(r"(s|x|z|ch|sh)$", word):
        return word + "es"
    if re.search(r"[^aeiou]y$", word):
        return word[:-1] + "ies"
    return word + "s"


def collection_name(entity_name: str) -> str:
    """Table and URL segment of an entity: `TaskItem` -> `task_items`."""
    return plural(snake_case(entity_name))


def collection_path(entity_name: str) -> str:
    """URL of an entity's collection in the generated API: `Task` -> `/api/tasks`."""
    return f"/api/{collection_name(entity_name)}"


def module_name(entity_name: str) -> str:
    """Python module of an entity in the generated project: `TaskItem` -> `task_item`."""
    return snake_case(entity_name)


def model_module_path(entity_name: str) -> str:
    """File of an entity's model in the generated project: `Task` -> `app/models/task.py`."""
    return f"app/models/{module_name(entity_name)}.py"


def api_module_path(entity_name: str) -> str:
    """File of an entity's REST blueprint: `Task` -> `app/api/task.py`."""
    return f"app/api/{module_name(entity_name)}.py"


def test_module_path(entity_name: str) -> str:
    """File of an entity's generated tests: `Task` -> `tests/test_task.py`."""
    return f"tests/test_{module_name(entity_name)}.py"
