"""What a real `dihya serve` (gunicorn) does with bodies sent in chunks and with a token
pasted where it does not belong: the 1 MiB limit holds whatever the framing, and a token
never reaches the log."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dihya.needs import MAX_NEEDS_BYTES
from support.serving import Server, clean_env

NEEDS = {"project": "shop", "stack": "flask-api",
         "entities": [{"name": "Item", "fields": [{"name": "label", "type": "string"}]}]}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    config = tmp_path_factory.mktemp("served") / "dihya.toml"
    config.write_text('[plugins]\n[audit]\nkey = "k"\n[web]\nrate_limit = "1000/minute"\n')
    made = subprocess.run([str(Path(sys.prefix) / "bin" / "dihya"), "--config", str(config),
                           "tokens", "create", "--role", "developer", "--name", "dev"],
                          capture_output=True, text=True, env=clean_env(), check=True)
    token = made.stdout.strip().splitlines()[-1]
    server = Server(Path(sys.prefix), config, workers=1).wait_ready()
    try:
        yield server, token
    finally:
        server.stop()


def post_chunked(port: int, path: str, token: str, body: bytes) -> tuple[int, bytes]:
    """POST `body` with `Transfer-Encoding: chunked` (no Content-Length); (status, body)."""
    head = (f"POST {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode()
    step = 64 * 1024
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + step]), body[i:i + step])
                      for i in range(0, len(body), step))
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head)
        # the server may answer 413 and close before reading it all
        with contextlib.suppress(OSError):
            sock.sendall(chunks + b"0\r\n\r\n")
        answer = b""
        while True:
            try:
                part = sock.recv(65536)
            except ConnectionResetError:
                break
            if not part:
                break
            answer += part
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def test_a_chunked_body_over_the_limit_is_413_not_cut_short(
        served: tuple[Server, str]) -> None:
    server, token = served
    valid = json.dumps({"needs": NEEDS}).encode()
    # valid JSON, padded with whitespace past 1 MiB: read only up to the limit it would
    # parse, and the request would be taken although it is larger than the API allows
    status, body = post_chunked(server.port, "/api/v1/generate", token,
                                valid + b" " * (MAX_NEEDS_BYTES + 10))
    assert status == 413, body[:300]
    # exactly at the limit, and small: still taken
    status, body = post_chunked(server.port, "/api/v1/generate", token,
                                valid + b" " * (MAX_NEEDS_BYTES - len(valid)))
    assert status == 200, body[:300]
    status, body = post_chunked(server.port, "/api/v1/generate", token, valid)
    assert status == 200, body[:300]


def test_a_token_pasted_into_a_path_is_not_logged(served: tuple[Server, str]) -> None:
    import time
    import urllib.error
    import urllib.request

    server, token = served
    secret = token.split("_", 2)[2]  # dihya_<hex id>_<secret>: the secret may hold "_"
    for path in (f"/api/v1/plugins/{token}", f"/admin/{token}/x", f"/{token}{token}"):
        request = urllib.request.Request(server.base + path)
        try:
            urllib.request.urlopen(request, timeout=30)
        except urllib.error.HTTPError as exc:
            assert exc.code in (303, 401, 404)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the access line is written after the answer
        lines = [line for line in server.output_so_far().splitlines()
                 if '"http.request"' in line and "[token]" in line]
        if len(lines) >= 3:
            break
        time.sleep(0.1)
    output = server.output_so_far()
    assert secret not in output
    token_id = token.split("_")[1]
    assert f'"path":"/api/v1/plugins/dihya_{token_id}_[token]"' in output, output[-2000:]


#: Requests that two HTTP parsers could frame differently (request smuggling behind a
#: proxy): each must be refused, never answered twice.
AMBIGUOUS = {
    "content-length-and-chunked": "POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
    "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
    "chunked-then-identity": "POST /healthz HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, "
    "identity\r\nContent-Length: 48\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
    "space-before-colon": "POST /healthz HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked"
    "\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
    "two-content-lengths": "POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n"
    "Content-Length: 40\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
    "chunked-in-http-1.0": "POST /healthz HTTP/1.0\r\nHost: t\r\nTransfer-Encoding: chunked"
    "\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
    "folded-header": "GET /healthz HTTP/1.1\r\nHost: t\r\nX-A: a\r\n b\r\n\r\n",
}


@pytest.mark.parametrize("name", list(AMBIGUOUS))
def test_ambiguous_framing_is_refused(served: tuple[Server, str], name: str) -> None:
    server, _token = served
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(AMBIGUOUS[name].encode())
        answer = b""
        while part := sock.recv(65536):
            answer += part
    statuses = [line.split(b"\r\n", 1)[0] for line in answer.split(b"HTTP/1.")[1:]]
    assert len(statuses) == 1 and statuses[0].split()[1] in (b"400", b"501"), answer[:300]


def test_the_declared_gunicorn_refuses_ambiguous_framing() -> None:
    """gunicorn before 23.0 took some of the requests above two ways (CVE-2024-6827,
    CVE-2024-1135): the distribution must not allow installing it."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.version import Version

    pyproject = Path(__file__).parents[2] / "pyproject.toml"
    requirements = [Requirement(r) for r in
                    tomllib.loads(pyproject.read_text())["project"]["dependencies"]]
    gunicorn = next(r for r in requirements if r.name == "gunicorn")
    assert not gunicorn.specifier.contains(Version("22.0.0")), gunicorn
    assert gunicorn.specifier.contains(Version("23.0.0")), gunicorn
