"""A proxy in front of a real model server that misbehaves on request.

The fault matrix needs endpoints that fail in the ways production ones do, at a moment the
harness chooses, while everything else stays real: the proxy forwards to a real llama.cpp (or
vLLM) server, and its `mode` turns each answer into the fault: refused connections, a 5xx storm,
an answer that never comes, one that trickles a byte a second, a huge body, or garbage.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODES = ("ok", "down", "server_errors", "hang", "trickle", "huge_body", "garbage_json")


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.mode = "ok"
        self.requests = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                proxy.handle(self, None)

            def do_POST(self) -> None:
                proxy.handle(self, self.rfile.read(int(self.headers.get("Content-Length", 0))))

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_port
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handle(self, handler: BaseHTTPRequestHandler, body: bytes | None) -> None:
        self.requests += 1
        mode = self.mode
        if mode == "down":  # as a refused or reset connection looks to the client
            handler.close_connection = True
            handler.connection.close()
            return
        if mode == "server_errors":
            return _send(handler, 503, b'{"error": "overloaded"}')
        if mode == "hang":
            time.sleep(30)
            return _send(handler, 503, b"{}")
        if mode == "trickle":
            return _trickle(handler)
        if mode == "huge_body":
            return _huge(handler, 40 << 20)
        if mode == "garbage_json":
            return _send(handler, 200, b"<html>502 Bad Gateway from some proxy</html>")
        _send(handler, *self._forward(handler.path, body))

    def _forward(self, path: str, body: bytes | None) -> tuple[int, bytes]:
        request = urllib.request.Request(self.upstream.removesuffix("/v1") + path, data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as reply:
                return reply.status, reply.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()


def _send(handler: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    except OSError:
        pass  # the client gave up first: that is the fault working


def _trickle(handler: BaseHTTPRequestHandler) -> None:
    try:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        for _ in range(1000):
            handler.wfile.write(b" ")
            handler.wfile.flush()
            time.sleep(1)
    except OSError:
        pass


def _huge(handler: BaseHTTPRequestHandler, size: int) -> None:
    chunk = b'{"pad": "' + b"x" * (1 << 20) + b'"}'
    try:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(size))
        handler.end_headers()
        sent = 0
        while sent < size:
            handler.wfile.write(chunk[: size - sent])
            sent += len(chunk)
    except OSError:
        pass
