"""Config files under concurrency and faults, with the real `dihya` command and server.

- Concurrent edits (real CLI processes started at once against one config) are all kept,
  with the operator's comments; `approve` applies only its own choices, after its checks.
- A symlinked config is edited through the link (the link stays, its target changes).
- Two allowlist tables for one plugin name and version are a config error naming both lines.
- `plugins verify` fails on a config that is empty, unreadable, or allowlists nothing while
  plugins are installed, and warns when the config or the store is open to other users.
- A real `dihya serve` whose config is emptied, deleted or broken keeps serving its last
  good allowlist, answers /readyz 503 saying why, and recovers when a good config is back.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.serving import Server, clean_env

ROOT = Path(__file__).resolve().parents[2]
TODO = json.loads((ROOT / "examples" / "needs" / "todo.json").read_text())
BUNDLED = ("example", "markdown-docs")
COMMENT = "# operator note: keep me"

pytestmark = pytest.mark.slow


def start(backend, *args: str, config: Path | None = None) -> subprocess.Popen[str]:
    """One `dihya` command, started now, not waited for."""
    cmd = [str(backend.venv / "bin" / "dihya"), "--config", str(config or backend.config),
           *args]
    return subprocess.Popen(cmd, cwd=backend.home, env=clean_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def entries(path: Path) -> dict[str, dict[str, Any]]:
    allow = tomllib.loads(path.read_text())["plugins"].get("allow", [])
    return {e["name"]: e for e in allow}


def test_concurrent_cli_edits_are_all_kept(backend) -> None:
    """Six commands at once: two approvals that each change one flag (their sandbox check
    takes seconds), and disables that land during those checks. Each edit must survive."""
    assert backend.dihya("plugins", "approve", *BUNDLED).returncode == 0
    commands = [
        ("plugins", "approve", "example", "--roles", "admin,developer"),
        ("plugins", "approve", "markdown-docs", "--required"),
        ("plugins", "approve", "example", "--required"),
        ("plugins", "approve", "markdown-docs", "--roles", "viewer"),
        ("plugins", "disable", "example", "--reason", "OPS-1"),
        ("plugins", "disable", "markdown-docs", "--reason", "OPS-2"),
    ]
    began = time.monotonic()
    procs = [start(backend, *args) for args in commands]
    results = [(p.args[3:], *p.communicate(timeout=300), p.returncode) for p in procs]
    print(f"[config-faults] {len(procs)} concurrent edits in {time.monotonic() - began:.1f} s")
    for args, _out, err, code in results:
        assert code == 0, (args, err)
    text = backend.config.read_text()
    assert text.startswith(COMMENT + "\n") and "hook_timeout_s = 5.0" in text, text
    got = entries(backend.config)
    assert set(got) == set(BUNDLED), text
    example, docs = got["example"], got["markdown-docs"]
    assert (example["enabled"], example.get("disabled_reason")) == (False, "OPS-1"), text
    assert (docs["enabled"], docs.get("disabled_reason")) == (False, "OPS-2"), text
    assert (example.get("roles"), example["required"]) == (["admin", "developer"], True), text
    assert (docs.get("roles"), docs["required"]) == (["viewer"], True), text
    assert not [p for p in backend.config.parent.iterdir() if p.name.endswith(".tmp")]


def test_a_symlinked_config_is_edited_through_the_link(backend, tmp_path: Path) -> None:
    real = tmp_path / "etc" / "dihya.toml"
    real.parent.mkdir()
    real.write_text(backend.config.read_text())
    link = backend.home / "linked.toml"
    link.symlink_to(os.path.relpath(real, link.parent))
    assert backend.dihya("plugins", "approve", "example", config=link).returncode == 0
    result = backend.dihya("plugins", "disable", "example", "--reason", "via link", config=link)
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert entries(real)["example"]["enabled"] is False
    assert real.read_text().startswith(COMMENT)
    assert (real.parent / ".dihya.toml.lock").exists()  # the lock is beside the real file
    # what a server reading the real path sees
    rows = backend.rows(config=real)
    assert (rows["example"]["status"], rows["example"]["reason"]) == (
        "disabled", "disabled-by-config")


def test_two_tables_for_one_plugin_are_refused_naming_both_lines(backend) -> None:
    assert backend.dihya("plugins", "approve", "example").returncode == 0
    text = backend.config.read_text()
    table = text[text.index("[[plugins.allow]]"):]
    backend.config.write_text(text + "\n" + table.replace("enabled = true", "enabled = false"))
    lines = backend.config.read_text().splitlines()
    first, second = (i + 1 for i, line in enumerate(lines) if line == "[[plugins.allow]]")
    for args in (("plugins", "list"), ("plugins", "verify"), ("plugins", "disable", "example")):
        result = backend.dihya(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert f"{backend.config}:{second}:1:" in result.stderr, result.stderr
        assert f"{backend.config}:{first}:1" in result.stderr, result.stderr
        assert "'example'" in result.stderr and "Keep one table" in result.stderr


def test_verify_fails_on_an_unusable_or_empty_allowlist(backend) -> None:
    """Every case in which the config approves nothing while plugins are installed."""
    backend.config.write_text("")
    result = backend.dihya("plugins", "verify")
    assert result.returncode == 1 and "is empty" in result.stderr, result.stderr
    assert "allow = []" in result.stderr  # how to approve nothing on purpose

    backend.config.write_text("# only a comment\n\n")
    listed = backend.dihya("plugins", "verify", "--json")
    assert listed.returncode == 1
    rows = json.loads(listed.stdout)
    assert [(r["check"], r["reason"], r["ok"]) for r in rows if not r["ok"]] == [
        ("config", "empty-config", False)]

    for text, said in ((COMMENT + "\n[plugins]\n", ""),
                       ("[plugins]\nallow = []\n", " (allow = [])")):
        backend.config.write_text(text)
        result = backend.dihya("plugins", "verify")
        assert result.returncode == 1, result.stderr
        assert f"allowlists no plugin{said} while 2 are installed (example, markdown-docs)" in (
            result.stderr), result.stderr
        assert "dihya plugins approve NAME" in result.stderr

    # unreadable (root reads any mode, so: a symlink loop)
    loop = backend.home / "loop.toml"
    loop.symlink_to("loop2.toml")
    (backend.home / "loop2.toml").symlink_to("loop.toml")
    result = backend.dihya("plugins", "verify", "--json", config=loop)
    assert result.returncode == 1, result.stderr
    assert [r["reason"] for r in json.loads(result.stdout)] == ["unreadable-config"]
    assert "cannot read the config" in result.stderr


def test_verify_warns_about_files_open_to_other_users(backend) -> None:
    assert backend.dihya("plugins", "approve", *BUNDLED).returncode == 0
    store = backend.home / "dihya.sqlite3"
    assert store.exists()
    backend.config.chmod(0o600)
    store.chmod(0o600)
    quiet = backend.dihya("plugins", "verify", "--json")
    assert quiet.returncode == 0
    assert [r for r in json.loads(quiet.stdout) if r["status"] == "warning"] == []
    backend.config.chmod(0o644)
    store.chmod(0o666)
    result = backend.dihya("plugins", "verify")
    assert result.returncode == 0, result.stderr  # a warning, not a failure
    assert f"warn config: the config file {backend.config} (mode 0644) is readable by every " \
           "user" in result.stdout, result.stdout
    assert f"warn store: the store file {store} (mode 0666) is writable by its group, " \
           "readable and writable by every user" in result.stdout, result.stdout
    rows = json.loads(backend.dihya("plugins", "verify", "--json").stdout)
    warnings = {r["check"]: r for r in rows if r["status"] == "warning"}
    assert set(warnings) == {"config", "store"}
    assert all(r["ok"] and r["reason"] == "file-permissions" for r in warnings.values())
    assert "chmod o-rwx,g-w" in warnings["config"]["message"]
    assert [r["name"] for r in rows if r["check"] == "plugin"] == list(BUNDLED)


# -- a real server whose config goes bad ------------------------------------------------------


def poll(what: str, probe: Callable[[], Any], done: Callable[[Any], bool],
         timeout: float = 60.0) -> Any:
    """Call `probe` until `done(result)`, or fail after `timeout` s with the last result."""
    deadline = time.monotonic() + timeout
    result = probe()
    while not done(result):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s; last: {result!r}")
        time.sleep(0.05)
        result = probe()
    return result


def readiness(server: Server, times: int = 6) -> list[tuple[int, str | None]]:
    """`times` readiness answers in a row (they land on either worker): status and the
    config problem's reason."""
    out = []
    for _ in range(times):
        status, _, body = server.call("GET", "/readyz", timeout=10)
        problem = (body or {}).get("config_problem")
        out.append((status, problem["reason"] if problem else None))
    return out


def plugins_ran(server: Server, token: str, times: int = 6) -> list[set[str]]:
    ran = []
    for _ in range(times):
        status, _, body = server.call("POST", "/api/v1/generate", token, {"needs": TODO})
        assert status == 200, body
        ran.append({p["name"] for p in body["report"]["plugins"] if p["status"] == "ok"})
    return ran


@pytest.fixture
def served(backend) -> Iterator[tuple[Server, str]]:
    assert backend.dihya("plugins", "approve", *BUNDLED).returncode == 0
    made = backend.dihya("tokens", "create", "--role", "developer", "--name", "app")
    token = made.stdout.strip().splitlines()[-1]
    server = Server(backend.venv, backend.config, workers=2, cwd=backend.home).wait_ready()
    try:
        yield server, token
    finally:
        server.stop()


FAULTS: list[tuple[str, Callable[[Path], None], str]] = [
    ("truncated", lambda p: p.write_text(""), "empty-config"),
    ("comments only", lambda p: p.write_text("# all gone\n"), "empty-config"),
    ("deleted", lambda p: p.unlink(), "missing-config"),
    ("malformed", lambda p: p.write_text("[plugins\n"), "invalid-config"),
    ("allowlist dropped", lambda p: p.write_text(COMMENT + "\n[plugins]\n"),
     "allowlist-dropped"),
]


def test_a_served_config_that_goes_bad_keeps_the_last_good_one(backend, served) -> None:
    server, token = served
    good = backend.config.read_text()
    assert plugins_ran(server, token) == [set(BUNDLED)] * 6
    for label, fault, reason in FAULTS:
        fault(backend.config)
        # every worker notices (several answers in a row), and says why
        poll(f"/readyz 503 {reason} after the config was {label}", lambda: readiness(server),
             lambda seen, reason=reason: seen == [(503, reason)] * 6)
        # ...while generations still run the last good allowlist, on every worker
        assert plugins_ran(server, token) == [set(BUNDLED)] * 6, label
        backend.config.write_text(good)
        poll(f"/readyz 200 once the config is back ({label})", lambda: readiness(server),
             lambda seen: seen == [(200, None)] * 6)
    server.stop()
    assert '"reason":"empty-config"' in server.output
    assert '"reason":"missing-config"' in server.output


def test_an_explicit_empty_allowlist_is_taken_by_a_running_server(backend, served) -> None:
    server, token = served
    result = backend.dihya("plugins", "revoke", "example")
    assert result.returncode == 0, result.stderr
    result = backend.dihya("plugins", "revoke", "markdown-docs")
    assert result.returncode == 0, result.stderr
    assert "allow = []" in backend.config.read_text()  # written on purpose by revoke
    poll("no plugin runs once every approval was revoked",
         lambda: plugins_ran(server, token), lambda ran: ran == [set()] * 6)
    assert readiness(server) == [(200, None)] * 6


def worker_pids(server: Server) -> set[int]:
    """The gunicorn workers: the children of the `dihya serve` process."""
    pids = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines()
                          if ":\t" in line)
        except OSError:  # the process ended while we looked
            continue
        if int(fields.get("PPid", "0").strip()) == server.proc.pid:
            pids.add(int(status.parent.name))
    return pids


def test_a_worker_restarted_while_the_config_is_broken_does_not_stop_the_server(
        backend, served) -> None:
    """gunicorn restarts a worker (here: killed) while the file is malformed. The new worker
    starts with the settings `dihya serve` validated and nothing approved, and says so in
    /readyz, instead of failing to boot (which makes gunicorn stop every worker)."""
    server, token = served
    good = backend.config.read_text()
    before = poll("both workers up", lambda: worker_pids(server), lambda p: len(p) == 2)
    backend.config.write_text("[plugins\n")
    poll("/readyz 503 invalid-config", lambda: readiness(server),
         lambda seen: seen == [(503, "invalid-config")] * 6)
    victim = min(before)
    os.kill(victim, 9)
    after = poll("a new worker in place of the killed one", lambda: worker_pids(server),
                 lambda p: len(p) == 2 and victim not in p and server.proc.poll() is None)
    (new,) = after - before
    poll("every worker, the new one too, answers 503 invalid-config",
         lambda: readiness(server), lambda seen: seen == [(503, "invalid-config")] * 6)
    assert server.proc.poll() is None, "the server stopped"
    backend.config.write_text(good)
    poll("/readyz 200 once the config is back", lambda: readiness(server),
         lambda seen: seen == [(200, None)] * 6)
    assert plugins_ran(server, token, times=8) == [set(BUNDLED)] * 8
    assert worker_pids(server) == after, f"worker {new} did not stay up"
