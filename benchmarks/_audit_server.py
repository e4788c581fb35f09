"""`dihya serve` for `audit_write.py`: the real gunicorn server (`DihyaServer` with the
options `dihya serve` uses), optionally with auditing replaced by a no-op in each worker,
so that a generation's latency can be measured with and without its audit commit.

Benchmark only: the core has no setting that turns auditing off.

    python benchmarks/_audit_server.py CONFIG PORT WORKERS THREADS audit|no-audit

Each worker prints `audit-commits <transactions> <events>` when it stops: how many audit
transactions it committed for how many events (group commit shares one among several).
"""

from __future__ import annotations

import sys
from typing import Any

from dihya.web.serve import DihyaServer, server_options


class BenchServer(DihyaServer):
    def __init__(self, config: str, options: dict[str, Any], audit: bool) -> None:
        self.audit = audit
        super().__init__(config, options)

    def load(self) -> Any:
        app = super().load()
        state = app.extensions["dihya"]
        group = state.auditor.log.group
        events = [0]
        record = state.auditor.record

        def counted(*args: Any, **kwargs: Any) -> Any:
            events[0] += 1
            return record(*args, **kwargs)

        state.auditor.record = counted if self.audit else (lambda *a, **k: None)
        import atexit

        atexit.register(lambda: print(f"audit-commits {group.transactions} {events[0]}",
                                      file=sys.stderr, flush=True))
        return app


def main() -> None:
    config, port, workers, threads, mode = sys.argv[1:6]
    options = server_options("127.0.0.1", int(port), int(workers), int(threads))
    options["accesslog"] = None  # the access log's writes are not what is measured
    BenchServer(config, options, audit=mode == "audit").run()


if __name__ == "__main__":
    main()
