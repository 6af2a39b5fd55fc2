"""A proxy in front of a real model server that misbehaves on request.

The fault matrix needs endpoints that fail in the ways production ones do, at a moment the
harness chooses, while everything else stays real: the proxy forwards to a real llama.cpp (or
vLLM) server, and its `mode` turns each answer into the fault: refused connections, a 5xx storm,
an answer that never comes, one that trickles a byte a second, one whose status line and headers
trickle (`slow_headers`: every read gets a byte before its timeout, so only a total deadline ends
it), a huge body, or garbage; or the real answer with a NUL and a lone surrogate in its text
(`nul_text`: what no database column takes as it is), or JSON of the wrong shape (`wrong_shape`).
`pause` is the seconds between trickled bytes.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODES = ("ok", "down", "server_errors", "hang", "trickle", "slow_headers", "huge_body", "garbage_json",
         "nul_text", "wrong_shape")
# Answers that parse as JSON but not as a completion: a message that is a string, a choice that is
# one, content that is a number, a token id that is not a number.
WRONG_SHAPES = (b'{"choices": [{"message": "x"}]}', b'{"choices": ["x"]}',
                b'{"choices": [{"message": {"content": 5}}]}',
                b'{"choices": [{"logprobs": {"tokens": ["token_id:abc"], "token_logprobs": [null]}}]}')


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.mode = "ok"
        self.pause = 1.0
        self.requests = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                proxy.handle(self, None)

            def do_POST(self) -> None:
                proxy.handle(self, self.rfile.read(int(self.headers.get("Content-Length", 0))))

            def do_PATCH(self) -> None:  # the Kubernetes API server's verb for a deployer's move
                self.do_POST()

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
        if mode == "slow_headers":
            return _slow_headers(handler, self.pause)
        if mode == "huge_body":
            return _huge(handler, 40 << 20)
        if mode == "garbage_json":
            return _send(handler, 200, b"<html>502 Bad Gateway from some proxy</html>")
        if mode == "wrong_shape":
            return _send(handler, 200, WRONG_SHAPES[self.requests % len(WRONG_SHAPES)])
        if mode == "nul_text":
            status, answer = self._forward(handler.path, body)
            return _send(handler, status, _with_nul(answer))
        _send(handler, *self._forward(handler.path, body))

    def _forward(self, path: str, body: bytes | None) -> tuple[int, bytes]:
        request = urllib.request.Request(self.upstream.removesuffix("/v1") + path, data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as reply:
                return reply.status, reply.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()


def _with_nul(answer: bytes) -> bytes:
    """The answer with " \u0000 \ud800" after each generated text, where a scorer looking for the
    right words still finds them."""
    try:
        body = json.loads(answer)
    except ValueError:
        return answer
    for choice in body.get("choices", []) if isinstance(body, dict) else []:
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            message["content"] += " \u0000 \ud800"
    return json.dumps(body).encode()


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


def _slow_headers(handler: BaseHTTPRequestHandler, pause: float) -> None:
    """A whole answer, status line first, one byte every `pause` seconds (about 17 minutes at 1 s)."""
    head = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"." * 1000 + b"\r\nContent-Length: 2\r\n\r\n{}"
    handler.close_connection = True
    try:
        for byte in head:
            handler.wfile.write(bytes((byte,)))
            handler.wfile.flush()
            time.sleep(pause)
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
