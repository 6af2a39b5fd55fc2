"""A total deadline for one outbound request, and the monitor's stop reaching it.

httpx's and urllib3's timeouts bound each socket operation, never the request: a server that
sends one byte of its headers before every read timeout holds a request for as long as it likes.
Here a request runs `within` a deadline, and every connect, TLS handshake, write and read it makes
is bounded by what is left of it, whatever the server does. A stop (`stopping_on`, set by the
monitor around its probe runs) ends a request in flight within about `SLICE` seconds:

    with stopping_on(monitor.stopping):      # what a SIGTERM reaches
        with within(30.0):                   # one request: connect, TLS, request, headers, body
            client.post(...)

Two ways to hold a request to it, one per HTTP library:

- httpx (`Endpoint`): its pool's sockets come from `DeadlineBackend`, whose streams read in slices
  of at most `SLICE` seconds until the deadline or a stop, and bound every other operation by
  the time left;
- urllib3 (the kubernetes client): `watch_connections` makes its connections hand their socket to
  the request's `Deadline`, whose watchdog shuts the socket down when the deadline passes or a
  stop comes; `shutdown` wakes a blocked read or write at once, where `close` would not.

The deadline and the stop are context variables: concurrent requests each see their own, with
no shared state, and `Endpoint.map` copies the caller's context into its worker threads. Outside
`within`, sockets behave as the library's own.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from typing import Any, TypeVar

import httpcore
import httpx

from monitor.errors import Stopping

T = TypeVar("T")
SLICE = 0.25  # seconds a read waits before it looks at the stop and the deadline again
PIECE = 64 << 10  # bytes written at a time: each piece gets only what is left of the deadline


class Deadline:
    """When one request must be done, and the stop that may end it sooner. Sockets handed to
    `watch` are shut down by a watchdog thread when either comes."""

    def __init__(self, seconds: float, stop: threading.Event | None = None) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.stop = stop
        self._sockets: list[Any] = []
        self._over = threading.Event()
        self._fired = False
        self._lock = threading.Lock()
        self._watchdog: threading.Thread | None = None

    def left(self) -> float:
        return self.at - time.monotonic()

    def check(self) -> None:
        """Raise `Stopping` once a stop was asked."""
        if self.stop is not None and self.stop.is_set():
            raise Stopping("stop requested during an outbound call")

    def until(self, timeout: float | None) -> float:
        """When one operation must end: its own timeout or the deadline, whichever comes first."""
        if timeout is None:
            return self.at
        return min(self.at, time.monotonic() + timeout)

    def timed_out(self) -> str:
        return f"no whole answer within {self.seconds:g} s"

    def cut(self, cause: BaseException | None = None) -> None:
        """If the watchdog shut this request's sockets down, the request failed, whatever its
        library made of that (http.client takes a connection shut mid-headers for a complete,
        empty answer): `Stopping` for a stop, `Expired` for the deadline."""
        if not self._fired:
            return
        if self.stop is not None and self.stop.is_set():
            raise Stopping("stop requested during an outbound call") from cause
        raise Expired(self.timed_out()) from cause

    def watch(self, sock: Any) -> None:
        """Shut `sock` down when the deadline passes or a stop comes (at once if either has)."""
        with self._lock:
            self._sockets.append(sock)
            fired = self._fired
            if self._watchdog is None:
                self._watchdog = threading.Thread(target=self._guard, name="forgetmenot-deadline",
                                                  daemon=True)
                self._watchdog.start()
        if fired:
            _shut(sock)

    def close(self) -> None:
        """The request is over: its watchdog ends without touching its sockets."""
        self._over.set()

    def _guard(self) -> None:
        while not self._over.wait(min(SLICE, max(self.left(), 0.0))):
            if self.left() <= 0 or (self.stop is not None and self.stop.is_set()):
                self._fire()
                return

    def _fire(self) -> None:
        with self._lock:
            self._fired = True
            watched = list(self._sockets)
        for sock in watched:
            _shut(sock)


class Expired(TimeoutError):
    """A request's deadline passed and its sockets were shut down."""


def _shut(sock: Any) -> None:
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


_STOP: ContextVar[threading.Event | None] = ContextVar("forgetmenot_stop", default=None)
_DEADLINE: ContextVar[Deadline | None] = ContextVar("forgetmenot_deadline", default=None)


@contextmanager
def stopping_on(stop: threading.Event) -> Iterator[None]:
    """Calls made inside (and in threads given a copy of this context) end when `stop` is set."""
    token = _STOP.set(stop)
    try:
        yield
    finally:
        _STOP.reset(token)


@contextmanager
def within(seconds: float) -> Iterator[Deadline]:
    """One request, start to finish, in `seconds`."""
    deadline = Deadline(seconds, _STOP.get())
    token = _DEADLINE.set(deadline)
    try:
        yield deadline
    except Exception as exc:
        deadline.cut(exc)
        raise
    else:
        deadline.cut()
    finally:
        _DEADLINE.reset(token)
        deadline.close()


def pause(seconds: float) -> None:
    """Sleep between tries; a stop ends it at once."""
    stop = _STOP.get()
    if stop is None:
        time.sleep(seconds)
    elif stop.wait(seconds):
        raise Stopping("stop requested while waiting to try again")


def sliced(timed_out: type[Exception] = TimeoutError) -> float | None:
    """How long the next wait may be inside the current request: at most `SLICE` seconds and
    never past its deadline (None outside any request). Raises `Stopping` on a stop and
    `timed_out` once the deadline has passed."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return None
    deadline.check()
    left = deadline.left()
    if left <= 0:
        raise timed_out(deadline.timed_out())
    return min(left, SLICE)


def bounded(timeout: float | None, timed_out: type[Exception]) -> float | None:
    """The timeout for one operation that cannot be cut in slices (connect, a TLS handshake, a
    write): its own, or what is left of the deadline if that is shorter."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    deadline.check()
    left = deadline.until(timeout) - time.monotonic()
    if left <= 0:
        raise timed_out(deadline.timed_out())
    return left


def waited(attempt: Callable[[float | None], T], timeout: float | None, timed_out: type[Exception]) -> T:
    """`attempt(seconds)`, made again each time it times out after a slice, until it succeeds or
    the operation's timeout or the request's deadline passes (`timed_out`). Only for operations
    that a timeout leaves as they were, as a read does."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return attempt(timeout)
    end = deadline.until(timeout)
    while True:
        deadline.check()
        left = end - time.monotonic()
        if left <= 0:
            raise timed_out(deadline.timed_out())
        with suppress(timed_out):
            return attempt(min(left, SLICE))


def watch(sock: Any) -> None:
    """Hand a socket the current request uses to its deadline's watchdog."""
    deadline = _DEADLINE.get()
    if deadline is not None and sock is not None:
        deadline.watch(sock)


# -- httpx: a network backend for httpcore's connection pool --------------------------------

class DeadlineStream(httpcore.NetworkStream):
    """httpcore's own stream, every operation kept to the current request's deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return waited(lambda seconds: self._inner.read(max_bytes, seconds), timeout, httpcore.ReadTimeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        for start in range(0, len(buffer), PIECE):
            seconds = bounded(timeout, httpcore.WriteTimeout)
            self._inner.write(buffer[start : start + PIECE], seconds)

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        seconds = bounded(timeout, httpcore.ConnectTimeout)
        return DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, seconds))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's sockets (`SyncBackend`), wrapped in `DeadlineStream`."""

    def __init__(self, inner: httpcore.NetworkBackend | None = None) -> None:
        self._inner = inner or httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        seconds = bounded(timeout, httpcore.ConnectTimeout)
        return DeadlineStream(self._inner.connect_tcp(host, port, seconds, local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        seconds = bounded(timeout, httpcore.ConnectTimeout)
        return DeadlineStream(self._inner.connect_unix_socket(path, seconds, socket_options))

    def sleep(self, seconds: float) -> None:
        pause(seconds)


class DeadlineTransport(httpx.HTTPTransport):
    """httpx's transport, its sockets from `DeadlineBackend`, directly or through an HTTP proxy.
    HTTPTransport takes no network backend, so the pool it made (a proxy's is a pool too) is given
    one: the connections to the proxy are held to the deadline like any other."""

    def __init__(self, connections: int, proxy: str | None = None) -> None:
        tls = httpx.create_ssl_context()
        limits = httpx.Limits(max_connections=connections)
        super().__init__(verify=tls, limits=limits, proxy=proxy)
        self._pool._network_backend = DeadlineBackend()


def environment_proxy(url: str) -> str | None:
    """The proxy HTTP_PROXY / HTTPS_PROXY name for `url`, unless NO_PROXY exempts its host: a
    client given its own transport does not read them, so the endpoint asks here."""
    from urllib.parse import urlsplit
    from urllib.request import getproxies, proxy_bypass

    parts = urlsplit(url)
    proxy = getproxies().get(parts.scheme)
    if proxy is None or proxy_bypass(parts.hostname or ""):
        return None
    return proxy


# -- urllib3: connections that hand their socket to the request's deadline ------------------

class WatchedConnection:
    """Mixed into a urllib3 connection class (`watch_connections`): the socket it opens, or
    reuses for a later request, is shut down when that request's deadline passes."""

    sock: Any

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        watch(self.sock)

    def request(self, *args: Any, **kwargs: Any) -> Any:
        watch(self.sock)  # None until connected: connect() watches it then
        return super().request(*args, **kwargs)  # type: ignore[misc]


def watch_connections(manager: Any) -> None:
    """Make every connection a urllib3 `PoolManager` opens a `WatchedConnection`, whatever its
    pools are (plain, TLS, through a proxy); only the names urllib3 and its forks share are used."""
    pools = manager.pool_classes_by_scheme
    manager.pool_classes_by_scheme = {scheme: _watched(pool) for scheme, pool in pools.items()}


def _watched(pool: Any) -> type:
    plain = pool.ConnectionCls
    connection = type(f"Watched{plain.__name__}", (WatchedConnection, plain), {})
    return type(f"Watched{pool.__name__}", (pool,), {"ConnectionCls": connection})
