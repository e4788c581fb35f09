"""`MarkdownDocsPlugin`: the `after_generation` hook that writes the project's docs."""

from __future__ import annotations

from typing import Any, Final

from dihya import GenerationPluginBase

from dihya_plugin_markdown_docs.docs import API_PATH, README_PATH, build_api, build_readme
from dihya_plugin_markdown_docs.markdown import check_document

PLUGIN_VERSION: Final = "1.0.0"


def document(code: dict[str, str], needs: dict[str, Any]) -> dict[str, str]:
    """Return a copy of `code` with `README.md` and `docs/API.md` (over)written.

    Both documents are checked before they are returned: every table-of-contents and
    in-document link must resolve, relative links must point to generated files and there
    must be no raw HTML; `MarkdownCheckError` is raised otherwise (a bug guard).
    """
    out = dict(code)
    out[README_PATH] = build_readme(needs)
    out[API_PATH] = build_api(needs)
    for path in (README_PATH, API_PATH):
        check_document(out[path], path, out.keys())
    return out


class MarkdownDocsPlugin(GenerationPluginBase):
    """Writes README.md and docs/API.md, generated from the needs, into the project."""

    name = "Markdown docs"
    description = ("Adds a README.md (quick start, entities and their fields) and a "
                   "docs/API.md (every endpoint with example requests and responses).")
    version = PLUGIN_VERSION
    author = "Dihya Team"
    safe = True
    priority = 50

    def after_generation(self, code: dict[str, str], needs: dict[str, Any]) -> dict[str, str]:
        """Return the code with README.md and docs/API.md added, replacing existing ones."""
        return document(code, needs)
