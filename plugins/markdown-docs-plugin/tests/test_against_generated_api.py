"""The documented examples, replayed against a project made by the core generator.

Needs Flask (the generated project's dependency); skipped when it is not installed, so
the plugin's own test environment needs only the core and the plugin.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from dihya import api_module_path, collection_path, validate_code

from dihya_plugin_markdown_docs import MarkdownDocsPlugin

_EXCHANGE = re.compile(r"```bash\n(?P<curl>curl .*?)\n```\n\n```http\n(?P<http>.*?)\n```", re.S)
_REPLAY = """
import json, sys
sys.path.insert(0, sys.argv[1])
from app import create_app
client = create_app({"TESTING": True, "DATABASE": sys.argv[2]}).test_client()
out = []
for ex in json.load(sys.stdin):
    kwargs = {"json": ex["body"]} if ex["body"] is not None else {}
    r = client.open(ex["path"], method=ex["method"], **kwargs)
    out.append({"status": r.status_code, "json": r.get_json(silent=True),
                "location": r.headers.get("Location"), "data": r.get_data(as_text=True)})
print(json.dumps(out))
"""
_ORDER = {"POST": 0, "GET": 1, "PATCH": 2, "DELETE": 3}


def _generate(needs: dict[str, Any]) -> dict[str, str]:
    generator = pytest.importorskip("dihya.generator")
    if not callable(getattr(generator, "generate", None)):
        pytest.skip("the core generator is not available")
    code: dict[str, str] = generator.generate(needs)
    return code


def _parse(curl: str, http: str) -> dict[str, Any]:
    args = shlex.split(curl.replace("\\\n", " "))
    method = args[args.index("-X") + 1] if "-X" in args else "GET"
    url = next(a for a in args if a.startswith("http://"))
    body = json.loads(args[args.index("-d") + 1]) if "-d" in args else None
    head, _, payload = http.partition("\n\n")
    lines = head.splitlines()
    headers = dict(line.split(": ", 1) for line in lines[1:])
    parts = urlsplit(url)
    return {
        "method": method, "path": parts.path + (f"?{parts.query}" if parts.query else ""),
        "body": body, "status": int(lines[0].split()[1]),
        "location": headers.get("Location"), "json": json.loads(payload) if payload else None,
    }


def _replay(project: Path, exchanges: list[dict[str, Any]]) -> list[dict[str, Any]]:
    result = subprocess.run(
        [sys.executable, "-c", _REPLAY, str(project), str(project / "test.sqlite3")],
        input=json.dumps(exchanges), capture_output=True, text=True, check=True, timeout=60)
    replies: list[dict[str, Any]] = json.loads(result.stdout)
    return replies


def test_paths_match_the_generated_blueprints(needs: dict[str, Any]) -> None:
    code = _generate(needs)
    out = MarkdownDocsPlugin().after_generation(code, needs)
    assert validate_code(out) == []
    for entity in needs["entities"]:
        blueprint = code[api_module_path(entity["name"])]
        assert f'url_prefix="{collection_path(entity["name"])}"' in blueprint
        assert f"`POST {collection_path(entity['name'])}`" in out["docs/API.md"]


def _write_documented_project(needs: dict[str, Any], tmp_path: Path) -> dict[str, str]:
    """Generate, add the plugin's docs, write it all under `tmp_path`; return the files."""
    code: dict[str, str] = MarkdownDocsPlugin().after_generation(_generate(needs), needs)
    for path, text in code.items():
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    return code


def test_documented_examples_match_the_generated_api(
    needs: dict[str, Any], tmp_path: Path
) -> None:
    pytest.importorskip("flask")
    code = _write_documented_project(needs, tmp_path)
    api = code["docs/API.md"]
    sections = re.split(r"\n## ", api)
    documented: list[dict[str, Any]] = []
    for entity in needs["entities"]:
        text = next(s for s in sections if s.startswith(f"{entity['name']}\n"))
        found = [_parse(m["curl"], m["http"]) for m in _EXCHANGE.finditer(text)]
        assert len(found) == 5, entity["name"]
        # Replay in an order that makes the documented state true: create first.
        documented += sorted(found, key=lambda ex: (_ORDER[ex["method"]], "?" not in ex["path"]))
    health = _parse(*next(_EXCHANGE.finditer(api)).group("curl", "http"))
    documented.append(health)
    replies = _replay(tmp_path, documented)
    for want, got in zip(documented, replies, strict=True):
        where = f"{want['method']} {want['path']}"
        assert got["status"] == want["status"], where
        assert got["json"] == want["json"], where
        if want["location"]:
            assert got["location"] == want["location"], where
        if want["status"] == 204:
            assert got["data"] == "", where


def test_documented_errors_match_the_generated_api(
    needs: dict[str, Any], tmp_path: Path
) -> None:
    pytest.importorskip("flask")
    code = _write_documented_project(needs, tmp_path)
    api = code["docs/API.md"]
    path = collection_path(needs["entities"][0]["name"])
    documented = [
        {"method": "GET", "path": f"{path}?limit=0", "body": None},
        {"method": "GET", "path": f"{path}/999", "body": None},
        {"method": "POST", "path": path, "body": {}},
        {"method": "POST", "path": path, "body": ["not", "an", "object"]},
    ]
    replies = _replay(tmp_path, documented)
    assert replies[0]["status"] == 400 and json.dumps(replies[0]["json"], indent=2) in api
    assert replies[1]["status"] == 404 and json.dumps(replies[1]["json"], indent=2) in api
    assert replies[2]["status"] == 422
    shown = json.loads(re.search(r"422 Unprocessable Entity\nContent-Type: application/json"
                                 r"\n\n(\{.*?\n\})", api, re.S)[1])
    assert shown["errors"].items() <= replies[2]["json"]["errors"].items()
    assert replies[3]["status"] == 400 and set(replies[3]["json"]) == {"error"}
