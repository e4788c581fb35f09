"""One request, one log line: request-derived values are escaped in every log line.

A real `dihya serve` receives paths holding encoded CR, LF and other control characters
and writes exactly one access-log line for each; the formatters are also checked alone.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import sys
from pathlib import Path

from dihya.audit.logs import json_handler
from support.serving import Server

# each raw character a log viewer could take for a line break or use to disguise a line
FORGERIES = {
    "lf": "%0a", "cr": "%0d", "crlf": "%0d%0a", "nul": "%00", "esc": "%1b", "del": "%7f",
    "nel": "%c2%85", "line-separator": "%e2%80%a8", "bidi-override": "%e2%80%ae",
}
RAW = ("\r", "\x00", "\x1b", "\x7f", "\x85", "\u2028", "\u202e")


def send(port: int, path: str) -> bytes:
    """One raw HTTP/1.1 request (urllib would re-encode the path); the status line back."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


def test_a_served_request_with_control_characters_is_one_access_log_line(
        tmp_path: Path) -> None:
    config = tmp_path / "dihya.toml"
    config.write_text("[plugins]\n")
    server = Server(Path(sys.prefix), config, workers=1).wait_ready()
    try:
        for name, encoded in FORGERIES.items():
            forged = f"{encoded}%5B01/Jan/2026%5D%20%22GET%20/forged"  # `[date] "GET /forged`
            status = send(server.port, f"/probe-{name}-{forged}")
            assert status.startswith(b"HTTP/1.1 404"), status
    finally:
        server.stop()
    lines = server.output.splitlines()  # universal newlines: a raw CR splits a line too
    for name in FORGERIES:
        mine = [line for line in lines if f"/probe-{name}-" in line]
        assert len(mine) == 1, f"{name}: {mine}"
        access = json.loads(mine[0])
        assert access["event"] == "http.request" and access["status"] == 404, access
        assert access["path"].startswith(f"/probe-{name}-")
    assert not [line for line in lines if line.startswith(("[01/Jan", '"GET /forged'))]
    assert not [c for c in RAW if c in server.output]
    paths = {json.loads(line)["path"] for line in lines if "/probe-" in line}
    assert '/probe-lf-\\x0a[01/Jan/2026] \\"GET /forged' in paths
    assert any(p.startswith("/probe-line-separator-\\u2028[") for p in paths)


def test_access_log_atoms_are_escaped_and_decoded_as_utf8() -> None:
    from dihya.escaping import escape_text
    from dihya.web.serve import EscapedAtoms

    # WSGI hands the path over as latin-1-decoded bytes
    path = b"/a\nb\r\\c\"d \xc3\xa9\xff".decode("latin-1")
    atoms = EscapedAtoms({"U": path, "s": 404, "{x-h}i": "v\x1b"})
    assert atoms["U"] == '/a\\x0ab\\x0d\\\\c\\"d é\\xff'
    assert atoms["s"] == 404 and atoms["{x-h}i"] == "v\\x1b" and atoms["q"] == "-"
    assert escape_text("\udcff") == "\\xff", "a byte that was not UTF-8 shows as itself"


def test_error_log_records_are_one_line_even_with_a_traceback() -> None:
    from dihya.web.serve import OneLineFormatter

    formatter = OneLineFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
    try:
        raise ValueError("bad\npath")
    except ValueError:
        record = logging.LogRecord("gunicorn.error", logging.ERROR, __file__, 1,
                                   "Error handling request %s", ("/x\r\nFORGED",),
                                   sys.exc_info())
    line = formatter.format(record)
    assert "\n" not in line and "\r" not in line
    assert line.startswith("[ERROR] Error handling request /x\\x0d\\x0aFORGED\\x0aTraceback")


def test_json_log_lines_escape_what_json_leaves_raw() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("dihya.test-log-lines")
    logger.addHandler(json_handler(stream))
    logger.propagate = False
    audit = logging.getLogger("dihya.audit")
    audit_handler = json_handler(stream)
    audit.addHandler(audit_handler)
    level = audit.level
    audit.setLevel(logging.INFO)
    try:
        logger.warning("plugin failed", extra={"plugin": "p\x7f\x85\u2028\u202e\nx"})
        audit.info(json.dumps({"plugin": "p\x85\u2028x", "type": "plugin.disabled"},
                              ensure_ascii=False))
    finally:
        logger.handlers.clear()
        audit.removeHandler(audit_handler)
        audit.setLevel(level)
    written = stream.getvalue()
    assert written.count("\n") == 2 and not [c for c in RAW if c in written]
    first, second = (json.loads(line) for line in written.splitlines())
    assert first["plugin"] == "p\x7f\x85\u2028\u202e\nx"
    assert second["plugin"] == "p\x85\u2028x"


def _serve_and_use(tmp_path: Path, *args: str) -> tuple[str, dict[str, str], str]:
    """A real `dihya serve` with a token: a generation, a 401, a 404; its output, the
    request ids it answered with (path -> id) and the token."""
    import subprocess

    from support.serving import clean_env

    config = tmp_path / "dihya.toml"
    config.write_text('[plugins]\n[audit]\nkey = "k"\n')
    made = subprocess.run([str(Path(sys.prefix) / "bin" / "dihya"), "--config", str(config),
                           "tokens", "create", "--role", "developer", "--name", "jane@x.org"],
                          capture_output=True, text=True, env=clean_env(), check=True)
    token = made.stdout.strip()
    needs = json.loads((Path(__file__).parents[2] / "examples/needs/todo.json").read_text())
    server = Server(Path(sys.prefix), config, workers=1, args=args).wait_ready()
    ids = {}
    try:
        status, headers, _ = server.call("POST", "/api/v1/generate", token, {"needs": needs})
        assert status == 200
        ids["/api/v1/generate"] = headers["X-Request-Id"]
        status, headers, _ = server.call("GET", "/api/v1/plugins", "dihya_wrong")
        assert status == 401
        ids["/api/v1/plugins"] = headers["X-Request-Id"]
        assert send(server.port, "/no-such-page").startswith(b"HTTP/1.1 404")
    finally:
        assert server.stop() == 0
    return server.output, ids, token


def test_every_served_line_is_json_with_time_level_event_request_id(tmp_path: Path) -> None:
    import datetime as dt

    output, ids, token = _serve_and_use(tmp_path)
    lines = output.splitlines()
    events = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}\n{output[-3000:]}") from None
        assert {"time", "level", "event", "request_id", "message"} <= set(row), line
        stamp = dt.datetime.fromisoformat(row["time"])
        assert row["time"].endswith("Z") and stamp.tzinfo is not None, line
        assert row["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), line
        for raw in ("%s", "%d", "%r", "%(", "%.1f"):
            assert raw not in row["message"], f"unrendered format string: {line}"
        events.append(row)
    kinds = {row["event"] for row in events}
    assert {"server", "http.request", "generation", "auth.failed"} <= kinds, kinds
    access = {row["path"]: row for row in events if row["event"] == "http.request"}
    for path, request_id in ids.items():
        assert access[path]["request_id"] == request_id, access[path]
    assert access["/no-such-page"]["status"] == 404 and access["/no-such-page"]["request_id"]
    # one generation, one line of its own: the audit event's, which says what the
    # pipeline's summary said (that one is at DEBUG under a server, issue #16)
    assert not [r for r in events if r.get("logger") == "dihya.pipeline"
                and r["message"].startswith("generation ")]
    [audited] = [r for r in events if r["event"] == "generation"]
    assert audited["request_id"] == ids["/api/v1/generate"] and audited["actor"].startswith("p-")
    assert {"needs_sha256", "files", "code_bytes", "code_sha256", "plugins_ok",
            "duration_ms"} <= set(audited), audited
    for secret in (token, "jane@x.org", "Team todo list"):
        assert secret not in output


def test_log_format_text_is_for_people(tmp_path: Path) -> None:
    import datetime as dt

    output, ids, token = _serve_and_use(tmp_path, "--log-format", "text")
    lines = output.splitlines()
    assert lines
    for line in lines:
        assert not line.startswith("{"), line
        dt.datetime.fromisoformat(line.split(" ", 1)[0])
    generate = [line for line in lines if "http.request" in line and "/api/v1/generate" in line]
    assert len(generate) == 1 and generate[0].endswith(f"[{ids['/api/v1/generate']}]")
    assert token not in output and "jane@x.org" not in output


def test_core_messages_render_words_and_numbers_and_redact_the_rest() -> None:
    from dihya.audit.logs import REDACTED, JsonFormatter

    record = logging.LogRecord("dihya.pipeline", logging.WARNING, __file__, 1,
                               "hook %s of plugin %s: %s (%.1f ms) by %s in %s", (
                                   "after_generation", "md-docs", "failed", 2.25,
                                   "jane.doe@example.org", "/home/jane/x"), None)
    row = json.loads(JsonFormatter().format(record))
    assert row["message"] == (f"hook after_generation of plugin md-docs: failed (2.2 ms) by "
                              f"{REDACTED} in {REDACTED}")
    assert row["event"] == "pipeline" and row["request_id"] is None

    server = logging.LogRecord("gunicorn.error", logging.ERROR, __file__, 1,
                               "Error handling request %s", ("/a/b?token=dihya_x&u=jane",), None)
    assert json.loads(JsonFormatter().format(server))["message"] == \
        "Error handling request /a/b?…"
