"""The operator console: server-rendered pages under `/admin`, on the app that serves the API.

Sign in with an `admin` (changes) or `viewer` (reads) API token; the session lives in the
state store (`sessions`), so every worker and node serves it. Every page goes out with a
strict Content-Security-Policy (scripts and styles from this app only, no inline code, no
framing); every form carries the session's CSRF token (`guard`). Actions call the same
functions as the JSON API (`dihya.web.operations`, `dihya.web.audit_api.purge_events`) or
the CLI (`dihya.store.tokens`, `dihya.approval`) and are audited as those are. The page modules
below attach their routes to the `console` blueprint.
"""

from __future__ import annotations

import logging
import threading
from typing import Final

from flask import Flask, g, request
from werkzeug.wrappers import Response

from dihya.gate.discovery import discover
from dihya.registry import RegistrySnapshot
from dihya.store.filelists import list_files, recorded, remember
from dihya.web.admin import (
    approval_pages,
    audit_pages,
    health_page,
    login,
    plugin_pages,
    token_pages,
)
from dihya.web.admin.blueprint import console
from dihya.web.admin.guard import Denied, render
from dihya.web.admin.sessions import IDLE_S, MAX_AGE_S, SessionStore
from dihya.web.state import DihyaState

__all__ = ["CONTENT_SECURITY_POLICY", "console", "init_console"]

# the page modules are imported for their routes
_PAGES: Final = (approval_pages, audit_pages, health_page, login, plugin_pages, token_pages)

log = logging.getLogger("dihya.web")

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def _is_console(path: str) -> bool:
    return path == "/admin" or path.startswith("/admin/")


@console.errorhandler(Denied)
def _denied(exc: Denied) -> Response:
    return render("error.html", exc.status, code=exc.status, title=exc.title,
                  detail=exc.detail)


def _error_page(status: int, title: str, detail: str) -> Response | None:
    """The console's errors are pages; the API's stay problem documents."""
    if not _is_console(request.path):
        return None
    if status == 404:
        detail = "There is no such console page."
    g.setdefault("console", None)
    return render("error.html", status, code=status, title=title, detail=detail)


def _headers(response: Response) -> Response:
    if _is_console(request.path):
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    return response


class ApprovedFileLists:
    """Records the file list of every approved plugin whose files verify, once per
    fingerprint and store, so that its next version can be compared with it. Runs when a
    new registry snapshot is first seen, after the response that saw it was sent."""

    def __init__(self, st: DihyaState) -> None:
        self.st = st
        self._seen: RegistrySnapshot | None = None
        self._done: set[str] = set()
        self._lock = threading.Lock()

    def check(self) -> None:
        try:
            snapshot = self.st.snapshot()
        except Exception:  # the store is unavailable: its health says why; try later
            return
        if snapshot is self._seen or not self._lock.acquire(blocking=False):
            return
        try:
            self._record(snapshot)
            self._seen = snapshot
        except Exception as exc:  # a missing diff later, never a failed request now
            log.warning("could not record approved file lists: %s", type(exc).__name__,
                        extra={"reason": "file-lists"})
        finally:
            self._lock.release()

    def _record(self, snapshot: RegistrySnapshot) -> None:
        wanted = {r.fingerprint: r for r in snapshot.records if r.fingerprint
                  and r.fingerprint == r.approved_fingerprint
                  and r.fingerprint not in self._done}
        if not wanted:
            return
        self._done |= recorded(self.st.store, list(wanted))
        missing = {fp: r for fp, r in wanted.items() if fp not in self._done}
        if not missing:
            return
        for plugin in discover(snapshot.config.group):
            for fp, r in missing.items():
                if (plugin.name, plugin.distribution) == (r.name, r.distribution):
                    files = list_files(plugin)
                    if files is not None and files.fingerprint == fp:
                        remember(self.st.store, files)
                        self._done.add(fp)


def init_console(app: Flask) -> None:
    """Serve the console on `app` (whose `app.extensions["dihya"]` is set up).

    `DIHYA_CONSOLE_IDLE_S` and `DIHYA_CONSOLE_MAX_AGE_S` in `app.config` change the
    session lifetimes (15 minutes idle, 12 hours in all).
    """
    st: DihyaState = app.extensions["dihya"]
    app.extensions["dihya.console.sessions"] = SessionStore(
        st.store, float(app.config.get("DIHYA_CONSOLE_IDLE_S", IDLE_S)),
        float(app.config.get("DIHYA_CONSOLE_MAX_AGE_S", MAX_AGE_S)))
    app.extensions["dihya.error_page"] = _error_page
    app.register_blueprint(console)
    app.after_request(_headers)
    lists = ApprovedFileLists(st)
    app.extensions["dihya.console.file_lists"] = lists
    lists.check()

    @app.after_request
    def _file_lists(response: Response) -> Response:
        response.call_on_close(lists.check)
        return response
