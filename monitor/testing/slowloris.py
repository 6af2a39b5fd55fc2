"""Slow clients, as a test double: connections that send a request head one byte at a time.

A slow-loris client opens many connections and keeps each one alive by sending one more byte of
its request head every few seconds; a server that gives each connection a thread and renews a
per-read timeout on every byte runs out of threads. `SlowClients` does exactly that against a
server on 127.0.0.1, from one thread, over plain TCP or TLS, and opens a connection again as soon
as the server closes it, so the load holds for as long as it runs. It records when the server
first closed each connection: a server with a deadline on the whole head closes them all.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time

HEAD = b"GET /healthz HTTP/1.1\r\nHost: slow\r\nX-Slow: " + b"a" * 400
_NOT_YET = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class SlowClients:
    def __init__(self, port: int, count: int, every_s: float, context: ssl.SSLContext | None = None) -> None:
        self.port, self.every_s, self.context = port, every_s, context
        self.began = time.monotonic()
        self.conns = [self._connect() for _ in range(count)]
        self.sent = [0] * count
        self.first_closed: list[float | None] = [None] * count  # seconds after the start
        self.closed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._send, name="slow-clients", daemon=True)

    def __enter__(self) -> SlowClients:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)
        for conn in self.conns:
            conn.close()

    def _connect(self) -> socket.socket:
        """Plain TCP connects without waiting; TLS finishes its handshake first, then waits on nothing."""
        if self.context is None:
            conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            conn.setblocking(False)
            conn.connect_ex(("127.0.0.1", self.port))
            return conn
        plain = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        wrapped = self.context.wrap_socket(plain, server_hostname="127.0.0.1")
        wrapped.setblocking(False)
        return wrapped

    def _send(self) -> None:
        while not self._stop.is_set():
            for n in range(len(self.conns)):
                self._one_byte(n)
            self._stop.wait(self.every_s)

    def _one_byte(self, n: int) -> None:
        conn = self.conns[n]
        if _gone(conn):
            self._reopen(n)
            return
        at = self.sent[n]
        try:
            conn.send(HEAD[at : at + 1])
        except _NOT_YET:
            return
        except OSError:
            self._reopen(n)
            return
        self.sent[n] = (at + 1) % len(HEAD)

    def _reopen(self, n: int) -> None:
        self.closed += 1
        if self.first_closed[n] is None:
            self.first_closed[n] = time.monotonic() - self.began
        self.conns[n].close()
        try:
            self.conns[n] = self._connect()
        except OSError:
            self.conns[n] = socket.socket()  # tried again at the next round
        self.sent[n] = 0


def _gone(conn: socket.socket) -> bool:
    """Closed by the server, or answered (a 503): either way no longer a slow client's hold."""
    try:
        conn.recv(1024)
    except _NOT_YET:
        return False
    except OSError:
        return True
    return True


def accepted(conns: list[socket.socket], within_s: float) -> int:
    """How many of the non-blocking `conns` finished connecting within `within_s`."""
    import selectors

    chooser = selectors.DefaultSelector()
    for n, conn in enumerate(conns):
        chooser.register(conn, selectors.EVENT_WRITE, n)
    ready: set[int] = set()
    deadline = time.monotonic() + within_s
    while len(ready) < len(conns) and time.monotonic() < deadline:
        for key, _ in chooser.select(timeout=0.5):
            conn = conns[key.data]
            if conn.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                ready.add(key.data)
            chooser.unregister(conn)
    chooser.close()
    return len(ready)
