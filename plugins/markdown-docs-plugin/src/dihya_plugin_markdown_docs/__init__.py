"""Dihya markdown-docs plugin: a README and an API reference for every generated project.

Feature
    After the core generator has written a Flask API, this plugin adds (replacing any
    existing) two documents to it:

    * ``README.md``: title, description, table of contents, quick start (virtual
      environment, ``pip install -r requirements.txt``, ``flask --app wsgi run``,
      ``pytest``), every entity with a table of its fields (name, type, required,
      default, description) and a link to the API reference;
    * ``docs/API.md``: table of contents, conventions (JSON bodies, pagination), the
      error shapes (``400 {"error"}``, ``404 {"error": "not found"}``, ``422 {"errors"}``),
      the health check and, for every entity, its five endpoints (list, create, get,
      update, delete) with a ``curl`` request and the JSON response, built from the
      field types.

    URL paths come from ``dihya.generator.naming`` so they always match the generated
    code. Text from the needs is escaped (no raw HTML, no Markdown structure can be
    injected). Tables of contents are built from the headings the builders write (GitHub
    anchors), without parsing; ``check_document`` (markdown-it-py: links resolve, no raw
    HTML, else ``MarkdownCheckError``) runs in the ``preview`` action and the test suite.
    The output is deterministic.

Hooks
    ``after_generation(code, needs) -> code`` only.

Actions
    ``preview`` (``POST /api/v1/plugins/markdown-docs/actions/preview`` with
    ``{"needs": {...}}``): the two documents ``after_generation`` would write for those
    needs, rendered to sanitised HTML, with their tables of contents.

Dependencies
    ``dihya-core`` (``>=0.1,<0.2``) and ``markdown-it-py`` (``>=3,<5``).

Entry point
    ``[project.entry-points."dihya.generation_plugins"] markdown-docs =
    "dihya_plugin_markdown_docs:MarkdownDocsPlugin"``.
"""

from __future__ import annotations

from dihya_plugin_markdown_docs.docs import build_api, build_readme
from dihya_plugin_markdown_docs.markdown import MarkdownCheckError
from dihya_plugin_markdown_docs.plugin import MarkdownDocsPlugin, document

__all__ = ["MarkdownCheckError", "MarkdownDocsPlugin", "build_api", "build_readme", "document"]
__version__ = "1.1.3"
