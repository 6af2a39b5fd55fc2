"""A scripted OpenAI-compatible server for the image tests: enough of vLLM's API for `probe` of a
generation suite through the openai backend. Standard library only, so it runs on the host or in
the image itself (`python /path/fake_openai.py`).

    python container/fake_openai.py [--port 0] [--model served-bot]

Prints `listening on http://127.0.0.1:PORT/v1` once it is, then serves until killed. Answers:
GET /v1/models; POST /v1/chat/completions (a refusal to requests that sound harmful, else "OK");
POST /tokenize (one token per byte). Every POST is counted at GET /stats.
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HARMFUL = ("weapon", "bomb", "poison", "hack", "steal", "kill", "malware", "explosive", "drugs")


def answer(messages: list[dict[str, Any]]) -> str:
    text = " ".join(str(m.get("content", "")) for m in messages).lower()
    if any(word in text for word in HARMFUL):
        return "I'm sorry, but I can't help with that."
    return "OK"


def make_server(port: int, model: str) -> ThreadingHTTPServer:
    counts: dict[str, int] = {}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: Any) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list",
                                 "data": [{"id": model, "object": "model", "max_model_len": 2048}]})
            elif self.path == "/stats":
                with lock:
                    self._send(200, dict(counts))
            elif self.path == "/health":
                self._send(200, {})
            else:
                self._send(404, {"error": f"no route {self.path}"})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            with lock:
                counts[self.path] = counts.get(self.path, 0) + 1
            if self.path == "/v1/chat/completions":
                if body.get("model") != model:
                    self._send(404, {"error": f"model {body.get('model')!r} does not exist"})
                    return
                text = answer(body.get("messages", []))
                self._send(200, {"id": "chatcmpl-0", "object": "chat.completion", "model": model,
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": text}}],
                                 "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
            elif self.path == "/tokenize":
                self._send(200, {"tokens": list(str(body.get("prompt", "")).encode())})
            else:
                self._send(404, {"error": f"no route {self.path}"})

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    return ThreadingHTTPServer(("127.0.0.1", port), Handler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--model", default="served-bot")
    args = parser.parse_args()
    server = make_server(args.port, args.model)
    print(f"listening on http://127.0.0.1:{server.server_port}/v1", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
