"""Wake the reloader as soon as another worker or node bumps the state version.

On PostgreSQL every bump (`Store._bump`) runs `pg_notify('dihya_state', <schema>)` in the
same transaction, delivered at commit. A `StateListener` holds one dedicated connection in
autocommit mode that LISTENs on that channel; `wait(timeout)` returns as soon as a
notification for this store's schema arrives, else after `timeout`. Polling the version
stays on as the safety net: a notification lost while the connection was down is caught
by the next poll. SQLite has no notifications: polling alone.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dihya.store import Store


class StateListener:
    """A LISTEN connection on the store's notification channel."""

    def __init__(self, store: Store) -> None:
        import psycopg

        from dihya.store import NOTIFY_CHANNEL

        url = store.engine.url.set(drivername="postgresql")
        self._conn: Any = psycopg.connect(url.render_as_string(hide_password=False),
                                          autocommit=True, connect_timeout=5)
        try:
            row = self._conn.execute("SELECT current_schema()").fetchone()
            self.schema: str = row[0] if row else ""
            self._conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        except Exception:
            self._conn.close()
            raise

    def wait(self, timeout: float) -> bool:
        """True when this store's state version changed (a notification came) within
        `timeout` seconds; False when the time ran out. Raises if the connection broke."""
        deadline = time.monotonic() + timeout
        woke = False
        while (left := deadline - time.monotonic()) > 0:
            for note in self._conn.notifies(timeout=left, stop_after=1):
                if note.payload == self.schema:
                    woke = True
            if woke:
                return True
        return False

    def close(self) -> None:
        self._conn.close()


def open_listener(store: Store) -> StateListener | None:
    """A listener for a PostgreSQL store; None for SQLite."""
    if store.is_sqlite:
        return None
    return StateListener(store)
