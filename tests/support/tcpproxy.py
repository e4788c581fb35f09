"""A TCP proxy in front of PostgreSQL that a test can cut: refuse connections (the server
is down), or lose the answer to one COMMIT (the server committed, the client never hears).

The client-to-server stream is split into PostgreSQL protocol messages (untyped start-up
packets, then a type byte and a length), so the proxy knows when a connection sends
`COMMIT` after inserting into `dihya_audit`: `lose_commit_reply()` arms it to forward
that COMMIT to the server, wait for the server's reply — the transaction is committed by
then — and close both sockets instead of forwarding it. (An insert is seen in a simple
query — with the COMMIT as its last statement, or alone —, in a Parse, or in a Bind of a
statement psycopg prepared from such a Parse.) The
client sees its connection die during COMMIT, exactly as when a network or a server host
fails at that instant.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from typing import Final

_UNTYPED_CODES: Final = {80877103, 80877104, 80877102}  # SSL, GSSENC, cancel requests


class _Cut(Exception):
    """The answer to an audit COMMIT reached the proxy: the connection dies here."""


def _is_audit_insert(text: bytes) -> bool:
    text = text.upper()
    return b"INSERT INTO DIHYA_AUDIT " in text or b"INSERT INTO DIHYA_AUDIT(" in text


class _Link:
    """One client connection and its server connection."""

    def __init__(self, proxy: TcpProxy, client: socket.socket, server: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.server = server
        self.started = False  # past the untyped start-up packets
        self.audit_insert = False  # an INSERT INTO dihya_audit since the last COMMIT
        self.prepared: dict[bytes, bytes] = {}  # prepared statement names -> their text
        self.lose_commit = False
        self.closed = False

    def close(self) -> None:
        self.closed = True
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def pump_up(self) -> None:
        """Client to server, message by message."""
        buffer = b""
        try:
            while not self.closed:
                data = self.client.recv(65536)
                if not data:
                    break
                buffer += data
                while True:
                    message, buffer = self._split(buffer)
                    if message is None:
                        break
                    self._inspect(message)
                    self.server.sendall(message)
        except OSError:
            pass
        self.close()

    def _split(self, buffer: bytes) -> tuple[bytes | None, bytes]:
        if not self.started:
            if len(buffer) < 8:
                return None, buffer
            (length,) = struct.unpack("!I", buffer[:4])
            if len(buffer) < length:
                return None, buffer
            (code,) = struct.unpack("!I", buffer[4:8])
            if code not in _UNTYPED_CODES:
                self.started = True  # the StartupMessage
            return buffer[:length], buffer[length:]
        if len(buffer) < 5:
            return None, buffer
        (length,) = struct.unpack("!I", buffer[1:5])
        if len(buffer) < 1 + length:
            return None, buffer
        return buffer[:1 + length], buffer[1 + length:]

    def _inspect(self, message: bytes) -> None:
        kind = message[:1]
        if not self.started or kind not in (b"Q", b"P", b"B"):
            return
        if kind == b"B":  # Bind: runs a statement prepared earlier, known by its name
            _portal, statement, _rest = message[5:].split(b"\0", 2)
            if statement in self.prepared:
                self._statement(self.prepared[statement])
            return
        if kind == b"P":  # Parse: name, then the query (a pipeline sends COMMIT so too)
            name, text, _rest = message[5:].split(b"\0", 2)
            if name:  # psycopg prepares a statement it runs often: later Binds name it
                self.prepared[name] = text.upper()
            self._statement(text.upper())
            return
        self._statement(message[5:].upper())

    def _statement(self, text: bytes) -> None:
        if _is_audit_insert(text):
            self.audit_insert = True
            # a simple query may carry the writes and the COMMIT together (the core's
            # audit append on PostgreSQL does): its last statement ends the transaction
            last = text.rstrip(b"\0 ;").rsplit(b";", 1)
            if len(last) == 2:
                self._transaction_end(last[1].strip())
        else:
            self._transaction_end(text)

    def _transaction_end(self, text: bytes) -> None:
        if text.rstrip(b"\0 ;") not in (b"COMMIT", b"ROLLBACK"):
            return
        if text.startswith(b"COMMIT") and self.audit_insert and self.proxy.take_cut():
            self.lose_commit = True  # set before the server can answer
        self.audit_insert = False

    def pump_down(self) -> None:
        """Server to client, message by message, until the server says COMMIT for a
        transaction whose answer is to be lost: then both sockets close, unanswered.
        (Every server message is framed: `url_for` turns SSL and GSS negotiation off, whose
        one-byte answers are not.)"""
        buffer = b""
        try:
            while not self.closed:
                data = self.server.recv(65536)
                if not data:
                    break
                buffer += data
                out = b""
                while len(buffer) >= 5:
                    (length,) = struct.unpack("!I", buffer[1:5])
                    if len(buffer) < 1 + length:
                        break
                    message, buffer = buffer[:1 + length], buffer[1 + length:]
                    # CommandComplete "COMMIT": the transaction is committed on the server
                    if self.lose_commit and message[:1] == b"C" and message[5:11] == b"COMMIT":
                        self.proxy.lost_replies += 1
                        self.client.sendall(out)  # what came before the COMMIT's answer
                        raise _Cut
                    out += message
                self.client.sendall(out)
        except (_Cut, OSError):
            pass
        self.close()


class TcpProxy:
    """Listens on 127.0.0.1:`port` and forwards to `target` until `close()`."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.lost_replies = 0
        self._cuts = 0
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        self._listener: socket.socket | None = None
        self.port = 0
        self.start()

    def url_for(self, url: str) -> str:
        """`url` (a PostgreSQL SQLAlchemy URL on `target`) rewritten to go through here."""
        host, port = self.target
        out = url.replace(f"@{host}:{port}/", f"@127.0.0.1:{self.port}/")
        sep = "&" if "?" in out else "?"
        return f"{out}{sep}sslmode=disable&gssencmode=disable"

    def start(self) -> None:
        """Accept connections (again, on the same port after `refuse()`)."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True,
                         name=f"tcpproxy-{self.port}").start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed
            try:
                server = socket.create_connection(self.target, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            link = _Link(self, client, server)
            with self._lock:
                self._links.append(link)
            threading.Thread(target=link.pump_up, daemon=True).start()
            threading.Thread(target=link.pump_down, daemon=True).start()

    def refuse(self) -> None:
        """The database is down: connections are refused and open ones die."""
        if self._listener is not None:
            # shutdown first: a close alone leaves the socket listening while a thread is
            # blocked in accept() on it
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        self.drop_connections()

    def drop_connections(self) -> None:
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.close()

    def lose_commit_reply(self, times: int = 1) -> None:
        """The next `times` COMMITs that follow an audit insert reach the server, and their
        connection dies before the client reads the answer."""
        with self._lock:
            self._cuts += times

    def take_cut(self) -> bool:
        with self._lock:
            if self._cuts <= 0:
                return False
            self._cuts -= 1
            return True

    def close(self) -> None:
        self.refuse()
