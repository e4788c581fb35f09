"""Run the backend under gunicorn (`dihya serve`).

Each worker builds its own app and registry (no preloading): plugin code is imported in
the worker that runs it, after the gate, never in the arbiter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication

from dihya.config import Config, ConfigError, load_config


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
                          boot_config=self.boot_config)


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

    from dihya.logs import configure

    configure(sys.stderr)


def serve(config_path: str, host: str, port: int, workers: int, timeout: int = 60) -> None:
    """Serve until interrupted (SIGINT/SIGTERM stop gracefully)."""
    DihyaServer(config_path, {
        "bind": f"{host}:{port}", "workers": workers, "timeout": timeout,
        "accesslog": "-", "errorlog": "-", "loglevel": "info",
        # The access log never shows client addresses, query strings or headers (personal
        # data, tokens): method, path, status, size and duration only.
        "access_log_format": '"%(m)s %(U)s" %(s)s %(B)s %(M)sms',
        "control_socket_disable": True,
        # the longest request line gunicorn accepts (4094 by default): longer ones get its
        # own 414 page; the API's query strings are far shorter
        "limit_request_line": 8190,
        "proc_name": "dihya",
    }).run()
