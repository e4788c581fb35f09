"""Shared fixtures: needs documents and a representative generated project."""

from __future__ import annotations

import copy
from typing import Any

import pytest

TODO_NEEDS: dict[str, Any] = {
    "project": "todo",
    "title": "Team todo list",
    "description": "A small REST API to track the tasks of a team and who owns them.",
    "version": "0.1.0",
    "stack": "flask-api",
    "entities": [
        {
            "name": "Task",
            "description": "Something to do.",
            "fields": [
                {"name": "title", "type": "string", "required": True, "max_length": 200,
                 "description": "What to do."},
                {"name": "notes", "type": "text"},
                {"name": "done", "type": "boolean", "default": False},
                {"name": "priority", "type": "integer", "default": 3},
                {"name": "estimate_hours", "type": "float"},
                {"name": "due_on", "type": "date"},
                {"name": "created_at", "type": "datetime"},
            ],
        },
        {
            "name": "TeamMember",
            "description": "A person on the team.",
            "fields": [
                {"name": "display_name", "type": "string", "required": True, "max_length": 80},
                {"name": "code", "type": "string", "max_length": 4},
            ],
        },
        {
            "name": "Box",
            "fields": [{"name": "label", "type": "string"}],
        },
    ],
}

GENERATED: dict[str, str] = {
    "app/__init__.py": '"""The todo application."""\n',
    "wsgi.py": "from app import create_app\n\napp = create_app()\n",
    "requirements.txt": "flask>=3\n",
    "README.md": "# Old readme\n",
}


@pytest.fixture
def needs() -> dict[str, Any]:
    return copy.deepcopy(TODO_NEEDS)


@pytest.fixture
def code() -> dict[str, str]:
    return dict(GENERATED)
