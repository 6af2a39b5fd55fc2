"""The monitor's HTTP server: the ASGI app of `monitor.service.http` on uvicorn, bounded like any
server that faces a network.

On an event loop a slow client costs a coroutine, never a thread, so no number of them can keep
`/healthz` or a scrape from an answer. What each bound limits:

- **a request's head** (request line and headers) must arrive whole within `head_timeout_s` of
  the connection being ready, or of the previous response on it. A per-read timeout is renewed by
  every byte, so a client sending one byte every few seconds would hold its connection for ever;
  this deadline is not. The connection is closed without an answer, as Go's ReadHeaderTimeout does.
- **a request's body** is read within `body_timeout_s` (408 otherwise; `monitor.service.http`).
- **connections**: at most `max_connections` at once; a request arriving past that is answered 503
  at once. The process's open-file limit is raised to fit them.
- **idle keep-alive** connections are closed after `keep_alive_s`.
- **the TLS handshake** is bounded by asyncio's own handshake timeout (60 s) and runs in the loop.
- **handlers that ask the database** run on at most `workers` threads; the rest wait as coroutines.
- **a stop** waits `grace_s` for requests in flight (a waiting gate answers as it stands).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import resource
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from monitor.errors import Refused

if TYPE_CHECKING:
    import ssl

    from starlette.types import Receive, Scope, Send

log = logging.getLogger(__name__)
_START_S = 15.0  # how long start() waits for the loop to listen


@dataclass(frozen=True)
class ServerLimits:
    head_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    keep_alive_s: int = 5
    max_connections: int = 4096
    workers: int = 16
    grace_s: int = 5


class Served(Protocol):
    """An ASGI app that says how it is to be served: over TLS or not, and within which limits."""

    limits: ServerLimits

    @property
    def tls(self) -> ssl.SSLContext | None: ...

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...


def bounded_protocol(head_timeout_s: float) -> Any:
    """uvicorn's h11 protocol with a deadline on every request's head."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeadDeadline(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._await_head()

        def handle_events(self) -> None:
            before = self.cycle
            super().handle_events()
            if self.cycle is not before:  # a request's head arrived: its cycle began
                self._stop_timer()

        def on_response_complete(self) -> None:
            self._await_head()  # the next request on this connection has the same deadline
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_timer()
            super().connection_lost(exc)

        def _await_head(self) -> None:
            self._stop_timer()
            self._head_timer = self.loop.call_later(head_timeout_s, self._head_overdue)

        def _stop_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_overdue(self) -> None:
            if not self.transport.is_closing():
                self.transport.close()

    return HeadDeadline


class HttpServer:
    """The app served from a thread of its own running an event loop; `port=0` picks a free port
    (see `.port`). With a TLS context every connection is TLS, with client certificates checked
    as the context says."""

    def __init__(self, app: Served, host: str = "127.0.0.1", port: int = 9464,
                 listening: socket.socket | None = None) -> None:
        import uvicorn

        self.limits = app.limits
        tls = app.tls
        config = uvicorn.Config(
            app, host=host, port=port, loop="asyncio", lifespan="off", log_config=None,
            access_log=False, server_header=False, http=bounded_protocol(self.limits.head_timeout_s),
            limit_concurrency=self.limits.max_connections, timeout_keep_alive=self.limits.keep_alive_s,
            timeout_graceful_shutdown=self.limits.grace_s, log_level="warning",
            ssl_context_factory=None if tls is None else functools.partial(_given, tls))
        self._server = uvicorn.Server(config)
        self._socket = listening or bind(host, port)
        self.scheme = "https" if tls is not None else "http"
        self.port = int(self._socket.getsockname()[1])
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]},
                                        name="forgetmenot-http", daemon=True)

    def start(self) -> HttpServer:
        _enough_descriptors(self.limits.max_connections)
        self._thread.start()
        deadline = time.monotonic() + _START_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the HTTP server did not start on port {self.port}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(self.limits.grace_s + 5.0)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound as uvicorn binds it but here: uvicorn logs a bind failure and
    exits the process with its own code, and a port in use is the caller's to change (Refused)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family=family, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        why = exc.strerror or str(exc)
        if exc.errno == errno.EADDRINUSE:
            why = "the port is already in use"
        raise Refused(f"cannot listen on {host}:{port}: {why}") from None
    sock.set_inheritable(True)
    return sock


def _given(tls: ssl.SSLContext, *_: object) -> ssl.SSLContext:
    return tls


def _enough_descriptors(connections: int) -> None:
    """Every connection is an open file: raise the soft limit toward the hard one so the bound
    on connections, not the process's file limit, is what a flood meets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + 1024
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        log.info("open-file limit raised from %d to %d for up to %d connections", soft, wanted, connections)
