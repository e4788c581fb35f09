"""The plugin's own costs in a sandbox worker (issue #16): what loading it imports, and the
documents remembered by needs, which must be exactly the documents built afresh."""

from __future__ import annotations

import copy
import subprocess
import sys
from typing import Any

from dihya_plugin_markdown_docs import build_api, build_readme, plugin
from dihya_plugin_markdown_docs.plugin import DOCUMENTS_CACHE, document


def test_loading_the_plugin_imports_no_renderer_nor_core_generator() -> None:
    """markdown-it-py, Jinja2 (the core generator) and jsonschema serve the `preview`
    action only: a worker that loads the plugin at every start does not import them."""
    probe = ("import sys, dihya_plugin_markdown_docs as m; m.MarkdownDocsPlugin; "
             "print(sorted(x for x in ('markdown_it', 'jinja2', 'dihya.generator.flask_api',"
             " 'html.parser') if x in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True,
                         text=True).stdout.strip()
    assert out == "[]"


def _fresh(needs: dict[str, Any]) -> tuple[str, str]:
    return build_readme(needs), build_api(needs)


def test_remembered_documents_are_the_documents_of_these_very_needs(
        sample_needs: dict[str, Any]) -> None:
    plugin._DOCUMENTS.clear()
    first = document({}, sample_needs)
    again = document({}, copy.deepcopy(sample_needs))
    assert again == first
    assert (again["README.md"], again["docs/API.md"]) == _fresh(sample_needs)
    # values that compare equal in Python but are other JSON are other needs: never mixed
    variants = []
    for value in (True, 1, 1.0):
        needs = copy.deepcopy(sample_needs)
        needs["entities"][0]["fields"][0]["default"] = value
        variants.append(needs)
    reordered = copy.deepcopy(sample_needs)
    reordered["entities"] = list(reversed(reordered["entities"]))
    variants.append(reordered)
    for needs in variants * 2:
        docs = document({}, needs)
        assert (docs["README.md"], docs["docs/API.md"]) == _fresh(needs)
    assert len(plugin._DOCUMENTS) <= DOCUMENTS_CACHE


def test_the_memo_is_bounded(sample_needs: dict[str, Any]) -> None:
    plugin._DOCUMENTS.clear()
    for n in range(DOCUMENTS_CACHE + 5):
        needs = copy.deepcopy(sample_needs)
        needs["description"] = f"variant {n}"
        assert (document({}, needs)["README.md"], build_api(needs)) == _fresh(needs)
    assert len(plugin._DOCUMENTS) == DOCUMENTS_CACHE
