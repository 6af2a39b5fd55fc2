"""The fault matrix's /healthz watch counts a monitor that stopped answering, not one the fault
killed on purpose, nor a new one still starting on a port the kernel handed out again."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator

import pytest

from monitor.testing.vitals import HealthWatch


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


def _answering() -> http.server.HTTPServer:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _until(condition: object, limit: float = 5.0) -> None:
    deadline = time.monotonic() + limit
    while not callable(condition) or not condition():
        assert time.monotonic() < deadline, "the watch never saw it"
        time.sleep(0.1)


@pytest.fixture
def watched() -> Iterator[tuple[http.server.HTTPServer, int, HealthWatch]]:
    """A monitor stand-in that has answered /healthz once, and the watch on it."""
    server = _answering()
    port = server.server_address[1]
    watch = HealthWatch()
    watch.ports.append(port)
    watch.start()
    try:
        _until(lambda: port in watch._answered)
        yield server, port, watch
    finally:
        watch.stop()


def _silence(server: http.server.HTTPServer) -> None:
    server.shutdown()
    server.server_close()


def test_a_killed_monitor_and_its_successor_on_the_same_port_are_not_silence(
        watched: tuple[http.server.HTTPServer, int, HealthWatch]) -> None:
    server, port, watch = watched
    watch.forget(port)  # the fault kills it: forgotten first
    _silence(server)
    watch.ports.append(port)  # the restarted monitor got the same port and is still starting
    time.sleep(1.6)  # three asks
    assert watch.unanswered == 0


def test_a_monitor_that_answered_and_then_fell_silent_is_counted(
        watched: tuple[http.server.HTTPServer, int, HealthWatch]) -> None:
    server, _, watch = watched
    _silence(server)
    _until(lambda: watch.unanswered > 0)
