"""The hostile corpus: plugins that attack at import or in a hook. Each is contained.

"Contained" means: the attack's effect does not happen (no connection arrives, no file is
written outside the worker's scratch directory, no secret reaches the output, no process
survives), the generation still succeeds with a well-behaved plugin's contribution, and the
report says what happened to the hostile plugin.
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sandbox_support import hook, sandboxed, statuses

from dihya.pipeline import run_generation
from dihya.sandbox.layers import probe
from support.wheels import plugin_source

WITNESS = hook('code["witness.txt"] = "still here"\nreturn code')


def require_layers(*names: str) -> None:
    available = probe()
    missing = [n for n in names if available.get(n) != "available"]
    if missing and not any(available.get(alt) == "available" for alt in ("bwrap",)
                           if "unshare" in missing):
        pytest.skip(f"layers unavailable on this machine: {missing} ({available})")


@pytest.fixture
def tcp_listener() -> Iterator[tuple[int, list[object]]]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    accepted: list[object] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                accepted.append(server.accept()[1])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join(2)
    server.close()


@pytest.fixture
def udp_listener() -> Iterator[tuple[int, socket.socket]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.5)
    yield sock.getsockname()[1], sock
    sock.close()


def run_with_witness(plugin_site, needs, closing, hostile: str, timeout: float = 2.0,
                     **settings) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    snap, names = sandboxed(plugin_site, {"hostile": hostile, "witness": WITNESS},
                            timeout=timeout, **settings)
    closing(snap)
    record = snap.get(names["hostile"])
    result = run_generation(needs, snap) if snap.get(names["witness"]).active else None
    assert result is not None, snap.get(names["witness"]).message
    assert result.files["witness.txt"] == "still here"
    assert statuses(result)[names["witness"]] == "ok"
    return ({"status": record.status, "reason": record.reason or "", "message": record.message},
            {h.name: h.status for h in result.plugins if h.name == names["hostile"]},
            result.files)


# -- network ----------------------------------------------------------------------------

def test_tcp_in_a_hook(plugin_site, needs, closing, tcp_listener) -> None:
    require_layers("seccomp")
    port, accepted = tcp_listener
    attack = hook(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), 1)\n"
                  "code['escaped.txt'] = 'connected'\nreturn code")
    _, report, files = run_with_witness(plugin_site, needs, closing, attack)
    assert list(report.values()) == ["failed"] and "escaped.txt" not in files
    assert accepted == []


def test_udp_in_a_hook(plugin_site, needs, closing, udp_listener) -> None:
    require_layers("seccomp")
    port, sock = udp_listener
    attack = hook("import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                  f"s.sendto(b'leak', ('127.0.0.1', {port}))\nreturn code")
    _, report, _ = run_with_witness(plugin_site, needs, closing, attack)
    assert list(report.values()) == ["failed"]
    with pytest.raises(TimeoutError):
        sock.recvfrom(100)


def test_network_at_import(plugin_site, needs, closing, tcp_listener, udp_listener) -> None:
    require_layers("bwrap")
    port, accepted = tcp_listener
    uport, usock = udp_listener
    source = ("#!full\nimport socket\nRESULTS = []\n"
              f"for attempt in (lambda: socket.create_connection(('127.0.0.1', {port}), 1),\n"
              "                lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
              f".sendto(b'x', ('127.0.0.1', {uport}))):\n"
              "    try:\n        attempt()\n        RESULTS.append('escaped')\n"
              "    except OSError as exc:\n        RESULTS.append(type(exc).__name__)\n"
              + plugin_source("NAME", body=hook("code['net.txt'] = str(RESULTS)\nreturn code")))
    record, report, files = run_with_witness(plugin_site, needs, closing, source)
    assert record["status"] == "active" and list(report.values()) == ["ok"]
    # TCP finds no listener in the worker's own network namespace; a UDP datagram may be
    # "sent" to that namespace's loopback, where nothing listens: neither reaches us
    assert eval(files["net.txt"])[0] != "escaped"
    assert accepted == []
    with pytest.raises(TimeoutError):
        usock.recvfrom(100)


# -- files and secrets --------------------------------------------------------------------

@pytest.mark.parametrize("when", ["import", "hook"])
def test_write_outside_the_scratch_directory(plugin_site, needs, closing, tmp_path,
                                             when) -> None:
    require_layers("landlock")
    targets = [Path("/tmp") / f"dihya-escape-{uuid.uuid4().hex}", tmp_path / "escape.txt",
               Path(plugin_site.site) / "planted.py"]
    attempt = ("RESULTS = []\n"
               f"for target in {[str(t) for t in targets]!r}:\n"
               "    try:\n        open(target, 'w').write('x')\n        RESULTS.append('wrote')\n"
               "    except OSError as exc:\n        RESULTS.append(type(exc).__name__)\n")
    if when == "import":
        source = "#!full\n" + attempt + plugin_source(
            "NAME", body=hook("code['w.txt'] = str(RESULTS)\nreturn code"))
    else:
        source = hook(attempt + "code['w.txt'] = str(RESULTS)\nreturn code")
    _, report, files = run_with_witness(plugin_site, needs, closing, source)
    assert list(report.values()) == ["ok"] and "wrote" not in files["w.txt"]
    assert not any(t.exists() for t in targets)


def test_backend_config_environment_and_home_stay_private(plugin_site, needs, closing,
                                                         tmp_path, monkeypatch) -> None:
    require_layers("landlock")
    backend = tmp_path / "backend"
    backend.mkdir(mode=0o700)
    config = backend / "dihya.toml"
    config.write_text('[audit]\nkey = "SECRET-AUDIT-KEY"\n')
    database = backend / "dihya.sqlite3"
    database.write_bytes(b"SECRET-DATABASE")
    monkeypatch.setenv("DIHYA_AUDIT_KEY", "SECRET-ENV-KEY")
    body = ("import os, json\nfound = {}\n"
            f"for path in {[str(config), str(database), '/etc/shadow', '/root/.bashrc']!r}:\n"
            "    try:\n        found[path] = open(path, 'rb').read().decode('latin-1')\n"
            "    except OSError as exc:\n        found[path] = type(exc).__name__\n"
            "found['env'] = dict(os.environ)\n"
            "code['loot.json'] = json.dumps(found)\nreturn code")
    _, report, files = run_with_witness(plugin_site, needs, closing, hook(body))
    assert list(report.values()) == ["ok"]
    loot = files["loot.json"]
    for secret in ("SECRET-AUDIT-KEY", "SECRET-DATABASE", "SECRET-ENV-KEY", "root:"):
        assert secret not in loot
    assert json.loads(loot)[str(config)] in ("PermissionError", "FileNotFoundError")


# -- processes ----------------------------------------------------------------------------

SPAWNERS = {
    "subprocess": "import subprocess\nsubprocess.run(['/bin/true'], check=True)",
    "os-system": "import os\nassert os.system('true') == 0",
    "posixsubprocess": (
        "import _posixsubprocess, os\n"
        "r, w = os.pipe()\n"
        "pid = _posixsubprocess.fork_exec([b'/bin/true'], [b'/bin/true'], True, (w,), None,"
        " None, -1, -1, -1, -1, -1, -1, r, w, True, False, 0, None, None, None, -1, None,"
        " False)\nassert pid > 0"),
    "ctypes-system": "import ctypes\nassert ctypes.CDLL(None).system(b'true') == 0",
    "fork": "import os\npid = os.fork()\nif pid == 0:\n    os._exit(0)\nos.waitpid(pid, 0)",
}


@pytest.mark.parametrize("kind", sorted(SPAWNERS))
def test_process_creation_in_a_hook_is_refused(plugin_site, needs, closing, kind) -> None:
    require_layers("seccomp")
    attack = hook(SPAWNERS[kind] + "\ncode['spawned.txt'] = 'yes'\nreturn code")
    _, report, files = run_with_witness(plugin_site, needs, closing, attack)
    assert list(report.values()) == ["failed"] and "spawned.txt" not in files


# -- resources and protocol ---------------------------------------------------------------

@pytest.mark.parametrize(("body", "status"), [
    ("while True:\n    pass", "timeout"),
    ("data = bytearray(4 * 1024 ** 3)\nreturn code", "failed"),
    ("import ctypes\nctypes.string_at(0)", "failed"),
    ("print('\\x00garbage' * 10000)\nimport os\nos.write(1, b'\\xff' * 100)\n"
     "code['printed.txt'] = 'fine'\nreturn code", "ok"),
    # over the 16 MiB frame limit: the worker cannot send it back
    ("code['big.txt'] = 'x' * (20 * 1024 * 1024)\nreturn code", "invalid-output"),
    ("return {'a.txt': 42, 'b': None}", "invalid-output"),
    ("return [1, 2, 3]", "invalid-output"),
    ("code['../../etc/x'] = 'x'\nreturn code", "invalid-output"),
])
def test_misbehaving_hooks(plugin_site, needs, closing, body, status) -> None:
    _, report, files = run_with_witness(plugin_site, needs, closing, hook(body), timeout=1.5)
    assert list(report.values()) == [status]
    if status == "ok":
        assert files["printed.txt"] == "fine"


def test_endless_import_is_a_start_failure(plugin_site, needs, closing) -> None:
    source = "#!full\nwhile True:\n    pass\n"
    # the timeout is the witness's too: generous, so that a loaded machine starts it in time
    # (the endless import costs the whole timeout, once)
    snap, names = sandboxed(plugin_site, {"hostile": source, "witness": WITNESS},
                            start_timeout_s=20.0)
    closing(snap)
    record = snap.get(names["hostile"])
    assert (record.status, record.reason) == ("failed", "sandbox-start-failed")
    result = run_generation(needs, snap)
    assert result.files["witness.txt"] == "still here"
    assert snap.sandbox.running().keys() == {names["witness"]}, "the endless import survived"


def test_memory_bomb_at_import(plugin_site, needs, closing) -> None:
    source = "#!full\nBLOB = bytearray(4 * 1024 ** 3)\n" + plugin_source("NAME")
    record, _, _ = run_with_witness(plugin_site, needs, closing, source)
    assert (record["status"], record["reason"]) == ("failed", "import-error")
    assert "MemoryError" in record["message"]


def test_a_forged_deeply_nested_frame_is_the_plugins_failure(plugin_site, needs,
                                                              closing) -> None:
    # the plugin writes its own frame on the stream to the backend: 1 MB of `[`
    forge = hook("import os, stat, struct\n"
                 "out = [fd for fd in range(3, 64) if _is_pipe(fd)][-1]\n"
                 "body = b'[' * (1024 * 1024)\n"
                 "os.write(out, struct.pack('>I', len(body)) + body)\n"
                 "return code")
    source = ("#!full\nimport os, stat\n"
              "def _is_pipe(fd):\n    try:\n        return stat.S_ISFIFO(os.fstat(fd).st_mode)\n"
              "    except OSError:\n        return False\n" + plugin_source("NAME", body=forge))
    _, report, _ = run_with_witness(plugin_site, needs, closing, source)
    assert list(report.values()) == ["failed"]


def test_filling_the_scratch_dir_stays_in_the_worker(plugin_site, needs, closing) -> None:
    require_layers("bwrap")
    fill = hook("import os\nwritten = 0\n"
                "try:\n    for i in range(64):\n"
                "        with open(os.path.join(os.environ['TMPDIR'], f'f{i}'), 'wb') as fh:\n"
                "            fh.write(b'x' * (1024 * 1024))\n        written += 1\n"
                "except OSError as exc:\n    code['full.txt'] = f'{written} {exc.errno}'\n"
                "code['where.txt'] = os.environ['TMPDIR']\nreturn code")
    _, report, files = run_with_witness(plugin_site, needs, closing, fill, scratch_mb=4)
    assert list(report.values()) == ["ok"]
    written, err = files["full.txt"].split()
    assert int(written) <= 4 and int(err) == 28  # ENOSPC: a private 4 MiB tmpfs
    assert not any(Path(files["where.txt"]).iterdir()), "the worker wrote to the host's disk"
