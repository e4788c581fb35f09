"""Fuzz a real `dihya serve` against its own OpenAPI document with schemathesis.

    python tests/web/fuzz.py [--max-examples N] [--max-time S] [-- extra schemathesis args]

Run by `tox -e api-fuzz`; works the same by hand in any environment where dihya-core,
the two bundled plugins (installed, not editable) and schemathesis are installed. It:

1. writes a temporary config (rate limit raised so fuzzing is not answered with 429s)
   and approves the bundled plugins `example` and `markdown-docs` in it;
2. creates a `developer` and an `admin` token;
3. starts `dihya serve` on a free port of 127.0.0.1 with 2 workers;
4. runs schemathesis on `/openapi.json` with the developer token (every operation a
   developer may use; a plugin action is called by a real plugin and action name, read from
   `plugins list --json`, so its request bodies reach the action's validation, and one
   valid call must then succeed), then with the admin token on the five admin routes
   (switches, reload, audit export and purge) with a real plugin name in the path, checking
   no 5xx and that status codes, content types, headers and bodies match the document.
   (That a developer gets 403 from the admin routes is tested in tests/web: fuzzing them
   with a developer token only ever meets that 403.)
5. stops the server, whatever happened.

Exit status: schemathesis's (0 when every check passed), 2 when the setup failed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

PLUGINS = ("example", "markdown-docs")
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_headers_conformance,response_schema_conformance,unsupported_method,"
          "allow_header_conformance")
# The admin run: the five routes a developer may not use (each answers a developer 403),
# plus the reads of one plugin.
ADMIN_ONLY = ("enablePlugin", "disablePlugin", "reloadPlugins", "exportAudit", "purgeAudit")
ADMIN_OPERATIONS = (*ADMIN_ONLY, "listPlugins", "showPlugin")
CONFIG = """\
# Written by tests/web/fuzz.py for one fuzzing run.
[web]
rate_limit = "100000/minute"

[plugins]
hook_timeout_s = 5.0
"""


class SetupError(Exception):
    pass


def tool(name: str) -> str:
    """`name` from this interpreter's environment, else from PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise SetupError(f"{name} is not installed in this environment")
    return found


def run(args: Sequence[str], env: dict[str, str]) -> str:
    done = subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    if done.returncode != 0:
        raise SetupError(f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}"
                         f"{done.stderr}")
    return done.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ready(base: str, server: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SetupError(f"the server exited with {server.returncode} before it was ready")
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise SetupError(f"the server did not get ready within {timeout:.0f} s")


def stop(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (gunicorn's arbiter and workers), then SIGKILL."""
    if server.poll() is not None:
        return
    for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return
        try:
            server.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


def real_names(listing: str) -> tuple[str, str, str]:
    """A plugin to switch and show, and a plugin with an action and that action's name, from
    `plugins list --json`: schemathesis's random names only ever meet 404."""
    import json

    rows = json.loads(listing)
    active = [r for r in rows if r["status"] == "active"]
    with_action = [r for r in active if r.get("actions")]
    if not active or not with_action:
        raise SetupError(f"no active plugin with an action to fuzz: {listing[:500]}")
    action = with_action[0]
    # the admin run switches its plugin off and on: another one than the action's, if any
    switched = next((r for r in active if r is not action), action)
    return switched["name"], action["name"], action["actions"][0]["name"]


def call_action(base: str, token: str, plugin: str, action: str, body: bytes) -> int:
    """One valid call of a plugin action (the fuzzed bodies mostly meet its validation)."""
    request = urllib.request.Request(
        f"{base}/api/v1/plugins/{plugin}/actions/{action}", data=body, method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code


def schemathesis_config(path: Path, parameters: dict[str, str],
                        operations: dict[str, dict[str, str]]) -> Path:
    """A schemathesis.toml fixing path parameters: globally, and per operation id."""
    def table(values: dict[str, str]) -> str:
        return "{ " + ", ".join(f'"{k}" = "{v}"' for k, v in values.items()) + " }"

    lines = [f"parameters = {table(parameters)}"] if parameters else []
    for op_id, values in operations.items():
        lines += ["", "[[operations]]", f'include-operation-id = "{op_id}"',
                  f"parameters = {table(values)}"]
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


def schemathesis(base: str, token: str, args: argparse.Namespace, env: dict[str, str],
                 max_time: int, report_dir: Path, config: Path, *extra: str) -> int:
    command = [
        tool("schemathesis"), "--config-file", str(config), "run", f"{base}/openapi.json",
        "--header", f"Authorization: Bearer {token}",
        "--checks", CHECKS,
        "--max-examples", str(args.max_examples),
        "--max-time", str(max_time),
        "--seed", str(args.seed),
        # One worker: hypothesis's lambda descriptions call ast.parse, which is not
        # thread-safe in CPython 3.11 ("AST constructor recursion depth mismatch").
        "--workers", "1",
        "--request-timeout", "30",
        "--generation-database", "none",
        "--report", "junit",
        "--report-dir", str(report_dir),
        "--no-color",
        *extra, *args.extra,
    ]
    print("+", " ".join(c if "Bearer" not in c else "Authorization: Bearer ***"
                        for c in command), flush=True)
    # Run in the work directory: schemathesis keeps a `.schemathesis/` cache in its cwd.
    return subprocess.run(command, env=env, cwd=report_dir.parent.parent, check=False).returncode


def _interrupted(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=30,
                        help="test cases per operation (default 30)")
    parser.add_argument("--max-time", type=int, default=180,
                        help="time budget in seconds of both schemathesis runs together, "
                             "two thirds for the developer run (default 180)")
    parser.add_argument("--seed", type=int, default=int(os.environ.get("FUZZ_SEED", "1")),
                        help="random seed (default $FUZZ_SEED or 1), for reproducible runs")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep config, store, server log and reports here")
    parser.add_argument("extra", nargs="*", help="more schemathesis arguments (after --)")
    args = parser.parse_args(argv)
    # A SIGTERM or SIGHUP (tox or CI cancelling) unwinds like Ctrl-C, through `finally`.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupted)

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="dihya-fuzz-")
        workdir = Path(tmp.name)
    else:
        workdir = args.workdir.absolute()
        workdir.mkdir(parents=True, exist_ok=True)
    server: subprocess.Popen[bytes] | None = None
    log = None
    try:
        config = workdir / "dihya.toml"
        config.write_text(CONFIG, "utf-8")
        env = {**os.environ, "DIHYA_CONFIG": str(config)}
        env.pop("DIHYA_PLUGINS_DISABLE", None)
        dihya = [tool("dihya"), "--config", str(config)]
        print(run([*dihya, "plugins", "approve", *PLUGINS], env), end="", flush=True)
        plugin, action_plugin, action = real_names(run([*dihya, "plugins", "list", "--json"],
                                                       env))
        developer_config = schemathesis_config(
            workdir / "developer.schemathesis.toml", {},
            {"callPluginAction": {"path.name": action_plugin, "path.action": action}})
        admin_config = schemathesis_config(workdir / "admin.schemathesis.toml",
                                           {"path.name": plugin}, {})
        tokens = {role: run([*dihya, "tokens", "create", "--role", role, "--name",
                             f"fuzz-{role}"], env).strip().splitlines()[-1]
                  for role in ("developer", "admin")}
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log_path = workdir / "server.log"
        log = log_path.open("wb")
        server = subprocess.Popen([*dihya, "serve", "--host", "127.0.0.1", "--port", str(port),
                                   "--workers", "2"], env=env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        wait_ready(base, server)
        print(f"server ready at {base} (log: {log_path})", flush=True)
        reports = workdir / "reports"
        developer_time = max(1, args.max_time * 2 // 3)
        not_admin = [arg for op in ADMIN_ONLY for arg in ("--exclude-operation-id", op)]
        code = schemathesis(base, tokens["developer"], args, env, developer_time,
                            reports / "developer", developer_config, *not_admin)
        if action_plugin == "markdown-docs" and action == "preview":
            needs = (Path(__file__).resolve().parents[2] / "examples/needs/todo.json").read_bytes()
            status = call_action(base, tokens["developer"], action_plugin, action,
                                 b'{"needs": ' + needs + b"}")
            print(f"valid call of {action_plugin}/{action} after fuzzing it: {status}",
                  flush=True)
            if status != 200:
                code = code or 1
        admin = [arg for op in ADMIN_OPERATIONS for arg in ("--include-operation-id", op)]
        code = schemathesis(base, tokens["admin"], args, env,
                            max(1, args.max_time - developer_time), reports / "admin",
                            admin_config, *admin) or code
        if server.poll() is not None:
            print(f"the server died during the run (exit {server.returncode})", flush=True)
            code = code or 1
        errors = [line for line in log_path.read_text("utf-8", "replace").splitlines()
                  if "internal error" in line or "Traceback" in line]
        if errors:
            print("the server logged internal errors:", *errors[:20], sep="\n  ", flush=True)
            code = code or 1
        return code
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc or 'Ctrl-C'}); stopping the server", file=sys.stderr)
        return 130
    except SetupError as exc:
        print(f"fuzz setup failed: {exc}", file=sys.stderr)
        if log is not None and args.workdir is None:
            log.flush()
            sys.stderr.write((workdir / "server.log").read_text("utf-8", "replace")[-4000:])
        return 2
    finally:
        if server is not None:
            stop(server)
        if log is not None:
            log.close()
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
