"""Run the backend under gunicorn (`dihya serve`).

Each worker builds its own app and registry (no app is preloaded): plugin code is imported
in the worker that runs it, after the gate, never in the arbiter. The arbiter imports the
core's own modules (`import_core`: `dihya.web` and the libraries it imports, Flask and
SQLAlchemy among them) before it forks, so that a worker starts with them loaded instead of
importing them again: it creates no app, opens no store, starts no thread and reads no
plugin's code or metadata (`tests/unit/test_web_imports.py`).

Every line the server writes, on stderr, has one format (`dihya.audit.logs`): JSON by
default, text for people with `--log-format text`. gunicorn's own lines go through
`RequestSafeLogger`: its error log through the same formatter, its access log as one
`http.request` record per request (method, path, status, bytes, duration and the request
id the app sent as `X-Request-Id`; never the client's address, the query string or a
header), every value that came from a request escaped, so a `%0a` or `%0d` in a URL
cannot forge a second line.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from pathlib import Path
from typing import Any, Final

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger as GunicornLogger
from gunicorn.glogging import SafeAtoms

from dihya.config import Config, ConfigError, load_config
from dihya.escaping import escape_text, redact_tokens


class EscapedAtoms(SafeAtoms):  # type: ignore[misc]
    """The access log's values with control characters escaped (`dihya.audit.logs.escape_text`)
    and `"` as `\\"`, as gunicorn's own `SafeAtoms` does, so a quoted value stays quoted."""

    def __init__(self, atoms: dict[str, Any]) -> None:
        dict.__init__(self)
        for key, value in atoms.items():
            self[key] = _escape_atom(value) if isinstance(value, str) else value


def _escape_atom(value: str) -> str:
    if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value \
            and "dihya_" not in value:
        return value  # nothing below would change it (the usual method, path, request id)
    # WSGI strings hold the request's bytes as latin-1: decode them as the UTF-8 they
    # usually are, so `é` is logged as `é` and a stray byte as `\xHH`.
    # A str beyond latin-1 is not a WSGI byte string (a header we set): escaped as it is.
    with contextlib.suppress(UnicodeEncodeError):
        value = value.encode("latin-1").decode("utf-8", "surrogateescape")
    # a token pasted into a URL (`/api/v1/plugins/dihya_…`) is not written to the log
    return escape_text(redact_tokens(value)).replace('"', '\\"')


class OneLineFormatter(logging.Formatter):
    """Another formatter's output with line breaks and control characters escaped: one
    record, one line, whatever a message or a traceback held."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return escape_text(self.inner.format(record), backslash=False)


class RequestIdFilter(logging.Filter):
    """Gives a record made while a request is answered that request's id (`g.request_id`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            g, has_app_context = _flask_context()
            if has_app_context():
                record.request_id = g.get("request_id")
        return True


@functools.cache
def _flask_context() -> tuple[Any, Any]:
    """Flask's `g` and `has_app_context`, imported on the first record (not per record)."""
    from flask import g, has_app_context

    return g, has_app_context


class RequestSafeLogger(GunicornLogger):  # type: ignore[misc]
    """gunicorn's logger writing the server's format (`log_format`) on stderr, with
    request-derived values escaped in every line."""

    atoms_wrapper_class = EscapedAtoms
    log_format = "json"

    def setup(self, cfg: Any) -> None:
        from dihya.audit.logs import formatter

        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                if getattr(handler, "_gunicorn", False):
                    handler.setFormatter(formatter(self.log_format))
                    if isinstance(handler, logging.StreamHandler) \
                            and handler.stream is sys.stdout:
                        handler.setStream(sys.stderr)  # one stream, one format

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        """One `http.request` record: method, path (escaped), status, bytes, duration and
        the response's `X-Request-Id`; nothing else of the request."""
        if not self.access_log_enabled:
            return
        status = resp.status
        code = int(str(status).split(None, 1)[0]) if status else 0
        method = _escape_atom(str(environ.get("REQUEST_METHOD", "-")))[:16]
        path = _escape_atom(str(environ.get("PATH_INFO", "")))[:2048]
        request_id = None
        for key, value in getattr(resp, "headers", ()) or ():
            if str(key).lower() == "x-request-id" and value:
                request_id = _escape_atom(str(value))[:64]
        ms = request_time.seconds * 1000 + request_time.microseconds / 1000
        sent = getattr(resp, "sent", None)
        log = self.access_log
        if not log.isEnabledFor(logging.INFO):
            return
        # `log.info` without its walk up the stack for the caller (always this method)
        log.handle(log.makeRecord(log.name, logging.INFO, __file__, _ACCESS_LINE_NO,
                                  f"{method} {path} {code}", (), None, "access", extra={
                                      "method": method, "path": path, "status": code,
                                      "bytes": sent, "duration_ms": round(ms, 2),
                                      "request_id": request_id}))


_ACCESS_LINE_NO: Final = RequestSafeLogger.access.__code__.co_firstlineno


def logger_class(log_format: str) -> type[RequestSafeLogger]:
    """`RequestSafeLogger` writing `log_format` (`json` or `text`)."""
    return type(f"RequestSafeLogger_{log_format}", (RequestSafeLogger,),
                {"log_format": log_format})


class DihyaServer(BaseApplication):  # type: ignore[misc]
    """A gunicorn application whose workers call `create_app(config_path)`.

    The config is read once here, in the arbiter, before any worker exists (`dihya serve`
    has just validated it): a worker that starts (or restarts) while the file cannot be
    used takes its settings with nothing approved and reports the problem in `/readyz`,
    rather than failing to boot, which would make gunicorn stop the whole server.
    """

    def __init__(self, config_path: str, options: dict[str, Any],
                 log_format: str = "json") -> None:
        self.config_path = config_path
        self.options = options
        self.log_format = log_format
        self.boot_config: Config | None = _boot_config(config_path)
        import_core(self.boot_config)
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from dihya.web import create_app

        configure_logging(self.log_format)
        return create_app(self.config_path, background_reload=True,
                          boot_config=self.boot_config, create_store=False)


def import_core(config: Config | None = None) -> None:
    """Import the modules every worker imports before it answers (the app factory, its
    blueprints, the store and the SQLAlchemy dialect and driver of `config`'s store, the
    gate), and prepare what its first generation would (the core's templates compiled,
    the needs and request body validators built), in the arbiter, once: workers are
    forked with them. Only the core's code, its libraries and its own package data: no
    app, no store connection, no thread, no plugin (plugins are imported by a worker's
    first build, after the gate)."""
    import dihya.store.facts  # noqa: F401 - imported by the first build
    import dihya.store.migrations  # noqa: F401 - by the store's schema check
    import dihya.store.seen  # noqa: F401 - by the audit of what changed
    import dihya.web  # noqa: F401
    from dihya.generator.flask_api import compile_templates
    from dihya.needs import prepare_validators
    from dihya.web.api import prepare_body_validators

    compile_templates()
    prepare_validators()
    prepare_body_validators()
    _import_dialect(config.effective_store_url if config is not None else "sqlite://")


def _import_dialect(url: str) -> None:
    """The SQLAlchemy dialect and database driver of the store at `url`, imported (not
    connected). A URL or driver that does not work is left to the worker to report."""
    import sqlalchemy as sa

    with contextlib.suppress(Exception):  # the worker's own start says what is wrong
        sa.engine.make_url(url).get_dialect().import_dbapi()


def _boot_config(config_path: str) -> Config | None:
    """The config as it is when the server starts; None if it cannot be read now (workers
    then refuse to boot on a broken file, as `create_app` does without a boot config)."""
    try:
        return load_config(Path(config_path))
    except ConfigError:
        return None


def configure_logging(log_format: str = "json") -> None:
    """Audit events and core messages in the server's format (allowlisted fields only) on
    stderr, with the request id of the request they belong to; Python warnings too.

    They do not propagate: gunicorn's root handler would print every line twice.
    """
    from dihya.audit.logs import configure, json_handler

    configure(sys.stderr, fmt=log_format)
    core = logging.getLogger("dihya")
    for handler in core.handlers:
        if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
            handler.addFilter(RequestIdFilter())
    logging.captureWarnings(True)
    warnings_log = logging.getLogger("py.warnings")
    if not warnings_log.handlers:
        warnings_log.addHandler(json_handler(sys.stderr, log_format))
        warnings_log.propagate = False


def server_options(host: str, port: int, workers: int, threads: int = 1,
                   timeout: int = 60, log_format: str = "json") -> dict[str, Any]:
    """gunicorn's settings for `dihya serve`. `threads` > 1: gunicorn's gthread worker, each
    worker answering that many requests at once (their audit events then share commits)."""
    return {
        "bind": f"{host}:{port}", "workers": workers, "threads": threads, "timeout": timeout,
        "accesslog": "-", "errorlog": "-", "loglevel": "info",
        # The access log never shows client addresses, query strings or headers (personal
        # data, tokens): method, path, status, size and duration only.
        "access_log_format": '"%(m)s %(U)s" %(s)s %(B)s %(M)sms',
        "control_socket_disable": True,
        # the longest request line gunicorn accepts (4094 by default): longer ones get its
        # own 414 page; the API's query strings are far shorter
        "limit_request_line": 8190,
        "proc_name": "dihya",
        "logger_class": logger_class(log_format),
        "post_fork": die_with_master,
        "worker_exit": close_worker_state,
    }


def serve(config_path: str, host: str, port: int, workers: int, timeout: int = 60,
          threads: int = 1, log_format: str = "json") -> None:
    """Serve until interrupted (SIGINT/SIGTERM stop gracefully); every line on stderr in
    `log_format` (`json` or `text`)."""
    configure_logging(log_format)  # the arbiter's own records (a config problem) too
    DihyaServer(config_path, server_options(host, port, workers, threads, timeout, log_format),
                log_format).run()


_PR_SET_PDEATHSIG = 1


def die_with_master(arbiter: Any, _worker: Any) -> None:
    """A server worker gets SIGTERM when its master dies, even by `kill -9`: it never serves
    unsupervised (gunicorn's own check runs only between idle waits), and a restart finds
    the port free once the workers finished their requests."""
    import ctypes
    import os
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != arbiter.pid:  # the master died before the line above
        os.kill(os.getpid(), signal.SIGTERM)


def close_worker_state(_arbiter: Any, worker: Any) -> None:
    """A server worker that stops (SIGTERM, recycling) stops its sandbox workers and
    removes their scratch directories; a killed one leaves them to the next start's sweep."""
    app = getattr(worker, "wsgi", None)
    state = getattr(app, "extensions", {}).get("dihya")
    if state is not None:
        state.close()
