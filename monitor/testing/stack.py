"""Real Prometheus and Alertmanager on 127.0.0.1, started and stopped by the caller.

Used by the end-to-end tests and the alert-latency benchmark (and handy for trying dashboards
and rules locally): Debian's `prometheus` and `prometheus-alertmanager` binaries, free ports,
a temporary folder, fast scrape and evaluation intervals. Nothing is reached outside loopback.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class WebhookReceiver:
    """Collects Alertmanager webhook posts, each stamped with the time it arrived."""

    received: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    raw: list[tuple[dict[str, str], bytes]] = field(default_factory=list)  # headers and exact body

    def start(self) -> WebhookReceiver:
        sink, raw = self.received, self.raw

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                raw.append((dict(self.headers.items()), body))
                sink.append((time.time(), json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def alerts(self) -> list[tuple[float, dict[str, Any]]]:
        return [(at, alert) for at, post in self.received for alert in post.get("alerts", [])]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise FileNotFoundError(f"none of {', '.join(names)} is installed (Debian: prometheus, "
                            "prometheus-alertmanager; `make tools`)")


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not come up in {timeout:.0f} s")


@contextmanager
def _process(command: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


@dataclass(frozen=True)
class Stack:
    prometheus: str
    alertmanager: str
    webhook: WebhookReceiver


@contextmanager
def stack(workdir: Path, monitor_target: str, rules: Path, interval: str = "1s",
          jobs: list[dict[str, Any]] | None = None) -> Iterator[Stack]:
    """Prometheus scraping `monitor_target` with `rules`, alerting into Alertmanager, into a webhook.
    `jobs` replaces the one plain scrape job (to scrape over TLS, with credentials)."""
    hook = WebhookReceiver().start()
    am_port, prom_port = free_port(), free_port()
    (workdir / "alertmanager.yml").write_text(yaml.safe_dump({
        "route": {"receiver": "hook", "group_by": ["alertname", "model", "version", "capability"],
                  "group_wait": "0s", "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [{"name": "hook", "webhook_configs": [
            {"url": f"http://127.0.0.1:{hook.port}/", "send_resolved": False}]}]}))
    shutil.copy(rules, workdir / "rules.yml")
    (workdir / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": ["rules.yml"],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
        "scrape_configs": jobs or [{"job_name": "forgetmenot",
                                    "static_configs": [{"targets": [monitor_target]}]}]}))
    am = [_binary("prometheus-alertmanager", "alertmanager"),
          f"--config.file={workdir / 'alertmanager.yml'}", f"--storage.path={workdir / 'am-data'}",
          f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="]
    prom = [_binary("prometheus"), f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'prom-data'}", f"--web.listen-address=127.0.0.1:{prom_port}"]
    try:
        with _process(am, workdir / "alertmanager.log"), _process(prom, workdir / "prometheus.log"):
            _wait_http(f"http://127.0.0.1:{am_port}/-/ready", 30)
            _wait_http(f"http://127.0.0.1:{prom_port}/-/ready", 30)
            yield Stack(f"http://127.0.0.1:{prom_port}", f"http://127.0.0.1:{am_port}", hook)
    finally:
        hook.stop()


def query(prometheus: str, promql: str) -> list[dict[str, Any]]:
    """Instant query against the real Prometheus."""
    from urllib.parse import urlencode

    with urllib.request.urlopen(f"{prometheus}/api/v1/query?{urlencode({'query': promql})}",
                                timeout=10) as reply:
        body = json.loads(reply.read())
    if body.get("status") != "success":
        raise RuntimeError(f"query failed: {body}")
    return list(body["data"]["result"])
