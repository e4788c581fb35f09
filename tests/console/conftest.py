"""Browser tests of the operator console: Debian's Chromium, driven by Playwright, against
a real `dihya serve` (2 workers) from a venv holding wheels of the core, both bundled
plugins and a `greeter` plugin whose next version the tests install while it serves.

Chromium is `/usr/bin/chromium` (Debian's package; `DIHYA_CHROMIUM` overrides): never a
browser Playwright downloads. Without it the tests are skipped with the reason, except
under `CI=true`, where they fail: `make test` and `.ci/run` install it.
With `DIHYA_CONSOLE_SCREENSHOTS=DIR` each page is saved as `DIR/<page>.png`
(`docs/console` is what the operator guide shows).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.browser import Backend
from support.checkout import checkout_wheels
from support.serving import Server
from support.wheels import build_plugin_wheel, plugin_source

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = sorted(p.parent for p in (ROOT / "plugins").glob("*/pyproject.toml"))
CHROMIUM = os.environ.get("DIHYA_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
IN_CI = os.environ.get("CI", "").lower() == "true"

GREETER_V2 = '''
def after_generation(self, code, needs):
    code["GREETING.txt"] = "hello from greeter 1.1\\n"
    return code
'''


def _unavailable(why: str) -> None:
    if IN_CI:
        pytest.fail(f"{why}; under CI=true the browser tests must run (.ci/run and "
                    "`make test` install Debian's chromium)")
    pytest.skip(why)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright for Python is not installed (pip install playwright)")
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"no Chromium at {CHROMIUM}: install Debian's package "
                     "(apt-get install chromium), or set DIHYA_CHROMIUM")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """A served backend: example, markdown-docs and greeter 1.0.0 approved; tokens for
    each role; greeter 1.1.0 built, not installed."""
    wheels_dir = tmp_path_factory.mktemp("wheels")
    checkout_wheels(wheels_dir)
    module = "dihya_plugin_greeter"
    v1 = build_plugin_wheel(wheels_dir / "v1", "greeter", version="1.0.0",
                            extra_files={f"{module}/old.py": "OLD = True\n"})
    v2 = build_plugin_wheel(wheels_dir / "v2", "greeter", version="1.1.0",
                            source=plugin_source("greeter", version="1.1.0", body=GREETER_V2),
                            extra_files={f"{module}/new.py": "NEW = True\n"})
    venv = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                    "--disable-pip-version-check", *map(str, sorted(wheels_dir.glob("*.whl"))),
                    str(v1)], check=True)
    home = tmp_path_factory.mktemp("home")
    b = Backend(venv, home, {"v1": v1, "v2": v2})
    b.config.write_text("# console e2e\n[plugins]\nhook_timeout_s = 5.0\n")
    b.ok("plugins", "approve", "example", "markdown-docs", "greeter")
    for role, name in (("admin", "ops"), ("viewer", "dash"), ("developer", "ci-bot")):
        b.tokens[role] = b.ok("tokens", "create", "--role", role, "--name", name) \
            .strip().splitlines()[-1]
    b.server = Server(venv, b.config, workers=2, cwd=home).wait_ready()
    try:
        yield b
    finally:
        b.server.stop()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB",
                              timezone_id="Europe/Paris", accept_downloads=True)
    ctx.set_default_timeout(15_000)
    try:
        yield ctx
    finally:
        ctx.close()
