"""The console's blueprint: `/admin`, its templates (`dihya/templates/admin`) and its own
static files (CSS and a little JavaScript, served by the app: no third-party resource)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Final

from flask import Blueprint

TEMPLATES: Final = Path(__file__).resolve().parents[2] / "templates"

console = Blueprint("console", __name__, url_prefix="/admin", static_folder="static",
                    static_url_path="/static", template_folder=str(TEMPLATES))


@console.app_template_filter("iso_time")
def iso_time(ts: float | None) -> str:
    """Seconds since the epoch as ISO 8601 in UTC (`2026-01-02T03:04:05Z`); the page's
    script adds the reader's local time beside it."""
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@console.app_template_filter("short_fingerprint")
def short_fingerprint(fp: str | None) -> str:
    """`sha256:0123456789ab…`: enough to tell builds apart at a glance."""
    if not fp:
        return ""
    return fp[:19] + "…" if len(fp) > 19 else fp


@console.app_context_processor
def _facts() -> dict[str, Any]:
    """What every console page may show: the version, the session lifetimes."""
    from flask import current_app

    from dihya import __version__

    lifetimes = current_app.extensions.get("dihya.console.sessions")
    return {"version": __version__,
            "idle_minutes": round(lifetimes.idle_s / 60) if lifetimes else 15,
            "max_age_hours": round(lifetimes.max_age_s / 3600) if lifetimes else 12}
