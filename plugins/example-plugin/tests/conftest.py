"""Shared fixtures: a needs document and a representative generated project."""

from __future__ import annotations

import copy
from typing import Any

import pytest

TODO_NEEDS: dict[str, Any] = {
    "project": "todo",
    "title": "  Team   todo\tlist  ",
    "description": "  A small REST API to track the tasks of a team.\n  ",
    "stack": "flask-api",
    "entities": [
        {
            "name": "Task",
            "description": " Something to do. ",
            "fields": [
                {"name": "title", "type": "string", "required": True, "max_length": 200,
                 "description": "  What to do  "},
                {"name": "notes", "type": "text"},
                {"name": "done", "type": "boolean", "default": False},
                {"name": "priority", "type": "integer", "default": 3},
                {"name": "due_on", "type": "date"},
            ],
        },
        {
            "name": "Member",
            "fields": [
                {"name": "display_name", "type": "string", "required": True,
                 "default": "  keep my spaces  "},
            ],
        },
    ],
}

GENERATED: dict[str, str] = {
    "app/__init__.py": '"""The todo application."""\n\nfrom flask import Flask\n\n\n'
                       "def create_app() -> Flask:\n    return Flask(__name__)\n",
    "app/models/__init__.py": "",
    "wsgi.py": "#!/usr/bin/env python3\nfrom app import create_app\n\napp = create_app()\n",
    "manage.py": "#!/usr/bin/env python3\n# -*- coding: utf-8 -*-\nprint('ok')\n",
    "legacy.py": "# coding: latin-1\nx = 1\n",
    "requirements.txt": "flask>=3\nsqlalchemy>=2\n",
    "pyproject.toml": '[project]\nname = "todo"\nversion = "0.1.0"\n',
    "setup.cfg": "[metadata]\nname = todo\n",
    "pytest.ini": "[pytest]\ntestpaths = tests\n",
    "scripts/run.sh": "#!/bin/sh\nset -eu\nflask --app wsgi run\n",
    "migrations/001_init.sql": "CREATE TABLE tasks (id INTEGER PRIMARY KEY);\n",
    "README.md": "# Todo\n\nGenerated project.\n",
    "templates/index.html": "<!DOCTYPE html>\n<html><body>todo</body></html>\n",
    "static/app.js": "'use strict';\nconsole.log('todo');\n",
    "static/style.css": "body { margin: 0; }\n",
    "config.json": '{"debug": false}\n',
    "Procfile": "web: gunicorn wsgi:app\n",
    "windows.bat.txt": "line one\r\nline two\r\n",
}


@pytest.fixture
def needs() -> dict[str, Any]:
    return copy.deepcopy(TODO_NEEDS)


@pytest.fixture
def code() -> dict[str, str]:
    return dict(GENERATED)
