"""Peak memory of the monitor reading large answers from one endpoint.

A server on 127.0.0.1 answers every request with the same vLLM-shaped echo answer (what
`/v1/completions` returns with `echo` and `logprobs: 1`: per prompt token its id, its
log-probability, the top alternative and a text offset) for `prompts` prompts of 2048 tokens.
A fresh client process per case posts `requests` times through one `Endpoint` with `concurrency`
requests in flight, as a probe run does, and reports its peak RSS (VmHWM, Linux: a child's
`ru_maxrss` starts at its parent's). Results go to benchmarks/results/endpoint_memory.{json,md}.

    .venv/bin/python benchmarks/endpoint_memory.py           # about a minute on 2 cores
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
TOKENS = 2048
CASES = [(16, 1), (16, 16), (52, 1), (52, 16)]  # (prompts per answer, requests in flight)
ROUNDS = 2  # requests per case: this many times the requests in flight, and at least 8


def echo_answer(prompts: int, tokens: int = TOKENS) -> bytes:
    """`prompts` choices shaped like vLLM 0.32's echo, which also sends `prompt_logprobs` (267
    bytes a token measured there, 545 KB for one prompt of 2040 tokens)."""
    numbers = [100 + 13 * i % 40000 for i in range(tokens)]
    ids = [f"token_id:{n}" for n in numbers]
    values = [-(1 + (i % 97) / 7.123456789) for i in range(tokens)]
    pairs = zip(ids, values, strict=True)
    top = [{token: value, "token_id:29": -0.924327552318573} for token, value in pairs]
    ranked = [{str(n): {"logprob": v, "rank": 26181, "decoded_token": " tok"},
               "29": {"logprob": -0.924327552318573, "rank": 1, "decoded_token": "-"}}
              for n, v in zip(numbers, values, strict=True)]
    logprobs = {"text_offset": [6 * i for i in range(tokens)], "token_logprobs": [None, *values[1:]],
                "tokens": ids, "top_logprobs": [None, *top[1:]]}
    choice = {"text": "token " * tokens, "logprobs": logprobs, "finish_reason": "length",
              "prompt_logprobs": [None, *ranked[1:]]}
    choices = [{"index": i, **choice} for i in range(prompts)]
    return json.dumps({"object": "text_completion", "model": "m", "choices": choices}).encode()


@contextmanager
def serving(body: bytes) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with suppress(OSError):  # the client abandoned it (over its cap)
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    class Server(ThreadingHTTPServer):
        request_queue_size = 64  # sixteen connections at once must not overflow the listen backlog
        daemon_threads = True

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1"
    finally:
        server.shutdown()
        server.server_close()


def client(url: str, concurrency: int, requests: int, max_bytes: int) -> dict[str, Any]:
    """One case, in its own process so that its peak RSS is its own."""
    from monitor.errors import BackendError
    from monitor.probing.backends.endpoint import Endpoint

    endpoint = Endpoint(url, concurrency=concurrency, max_retries=0, timeout_s=300, max_bytes=max_bytes)
    start_mb = peak_rss_mb()

    def post(_: int) -> str:
        try:
            return str(len(endpoint.post("/completions", {"prompt": [[1, 2, 3]]})["choices"]))
        except BackendError as exc:
            return exc.kind

    began = time.monotonic()
    outcomes = endpoint.map(post, list(range(requests)))
    seconds = time.monotonic() - began
    peak_mb = peak_rss_mb()
    return {"start_mb": round(start_mb), "peak_mb": round(peak_mb), "seconds": round(seconds, 1),
            "outcomes": {o: outcomes.count(o) for o in sorted(set(outcomes))}}


def peak_rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    line = next(row for row in status.splitlines() if row.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def run_case(prompts: int, concurrency: int) -> dict[str, Any]:
    body = echo_answer(prompts)
    requests = max(8, ROUNDS * concurrency)
    max_bytes = prompts << 20  # the cap per answer the openai backend gives a batch this size
    with serving(body) as url:
        command = [sys.executable, __file__, "--client", url, "--concurrency", str(concurrency),
                   "--requests", str(requests), "--max-bytes", str(max_bytes)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True)
    measured = json.loads(done.stdout.splitlines()[-1])
    return {"prompts": prompts, "answer_mb": round(len(body) / 1e6, 1), "concurrency": concurrency,
            "requests": requests, **measured}


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| answer | MB | in flight | requests | peak RSS (MB) | RSS at start (MB) | s | outcomes |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        outcomes = ", ".join(f"{k}: {v}" for k, v in r["outcomes"].items())
        lines.append(f"| {r['prompts']} × {TOKENS} tokens | {r['answer_mb']} | {r['concurrency']} | "
                     f"{r['requests']} | {r['peak_mb']} | {r['start_mb']} | {r['seconds']} | {outcomes} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, default=8, help=argparse.SUPPRESS)
    parser.add_argument("--max-bytes", type=int, default=32 << 20, help=argparse.SUPPRESS)
    parser.add_argument("--label", default="endpoint_memory", help="name of the results files")
    args = parser.parse_args()
    if args.client:
        print(json.dumps(client(args.client, args.concurrency, args.requests, args.max_bytes)))
        return 0
    rows = [run_case(prompts, concurrency) for prompts, concurrency in CASES]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.label}.json").write_text(json.dumps(rows, indent=2) + "\n")
    report = table(rows)
    (RESULTS / f"{args.label}.md").write_text(report + "\n")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
