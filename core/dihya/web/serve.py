"""Run the backend under gunicorn (`dihya serve`).

Each worker builds its own app and registry (no preloading): plugin code is imported in
the worker that runs it, after the gate, never in the arbiter.

gunicorn's own log lines go through `RequestSafeLogger`: every value that came from a
request (the path, a header) is escaped in the access log, and every error-log record is
written on one line, so a `%0a` or `%0d` in a URL cannot forge a second line.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger as GunicornLogger
from gunicorn.glogging import SafeAtoms

from dihya.config import Config, ConfigError, load_config
from dihya.escaping import escape_text


class EscapedAtoms(SafeAtoms):  # type: ignore[misc]
    """The access log's values with control characters escaped (`dihya.audit.logs.escape_text`)
    and `"` as `\\"`, as gunicorn's own `SafeAtoms` does, so a quoted value stays quoted."""

    def __init__(self, atoms: dict[str, Any]) -> None:
        dict.__init__(self)
        for key, value in atoms.items():
            self[key] = _escape_atom(value) if isinstance(value, str) else value


def _escape_atom(value: str) -> str:
    # WSGI strings hold the request's bytes as latin-1: decode them as the UTF-8 they
    # usually are, so `é` is logged as `é` and a stray byte as `\xHH`.
    # A str beyond latin-1 is not a WSGI byte string (a header we set): escaped as it is.
    with contextlib.suppress(UnicodeEncodeError):
        value = value.encode("latin-1").decode("utf-8", "surrogateescape")
    return escape_text(value).replace('"', '\\"')


class OneLineFormatter(logging.Formatter):
    """Another formatter's output with line breaks and control characters escaped: one
    record, one line, whatever a message or a traceback held."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return escape_text(self.inner.format(record), backslash=False)


class RequestSafeLogger(GunicornLogger):  # type: ignore[misc]
    """gunicorn's logger with request-derived values escaped in every line."""

    atoms_wrapper_class = EscapedAtoms

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                if getattr(handler, "_gunicorn", False) and handler.formatter is not None \
                        and not isinstance(handler.formatter, OneLineFormatter):
                    handler.setFormatter(OneLineFormatter(handler.formatter))


class DihyaServer(BaseApplication):  # type: ignore[misc]
    """A gunicorn application whose workers call `create_app(config_path)`.

    The config is read once here, in the arbiter, before any worker exists (`dihya serve`
    has just validated it): a worker that starts (or restarts) while the file cannot be
    used takes its settings with nothing approved and reports the problem in `/readyz`,
    rather than failing to boot, which would make gunicorn stop the whole server.
    """

    def __init__(self, config_path: str, options: dict[str, Any]) -> None:
        self.config_path = config_path
        self.options = options
        self.boot_config: Config | None = _boot_config(config_path)
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from dihya.web import create_app

        configure_logging()
        return create_app(self.config_path, background_reload=True,
                          boot_config=self.boot_config, create_store=False)


def _boot_config(config_path: str) -> Config | None:
    """The config as it is when the server starts; None if it cannot be read now (workers
    then refuse to boot on a broken file, as `create_app` does without a boot config)."""
    try:
        return load_config(Path(config_path))
    except ConfigError:
        return None


def configure_logging() -> None:
    """Audit events and core messages as JSON lines (allowlisted fields only) on stderr.

    They do not propagate: gunicorn's root handler would print every line twice.
    """
    import sys

    from dihya.audit.logs import configure

    configure(sys.stderr)


def server_options(host: str, port: int, workers: int, threads: int = 1,
                   timeout: int = 60) -> dict[str, Any]:
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
        "logger_class": RequestSafeLogger,
        "post_fork": die_with_master,
        "worker_exit": close_worker_state,
    }


def serve(config_path: str, host: str, port: int, workers: int, timeout: int = 60,
          threads: int = 1) -> None:
    """Serve until interrupted (SIGINT/SIGTERM stop gracefully)."""
    DihyaServer(config_path, server_options(host, port, workers, threads, timeout)).run()


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
