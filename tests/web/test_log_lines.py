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
        assert mine[0].startswith('"GET /probe-') and mine[0].endswith("ms"), mine[0]
    assert not [line for line in lines if line.startswith(("[01/Jan", '"GET /forged'))]
    assert not [c for c in RAW if c in server.output]
    assert '"GET /probe-lf-\\x0a[01/Jan/2026] \\"GET /forged" 404' in server.output
    assert "/probe-line-separator-\\u2028[" in server.output


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
