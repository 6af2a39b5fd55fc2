"""The HTTP surface under requests it must refuse: other methods, bad query parameters, ids out of
range, a handler that breaks, and clients that open a socket and never finish their request.
Each reproduces a finding of the security review, on a real server and a real store."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from monitor.policy.loading import load_config
from monitor.service import http as served
from monitor.service.http import Api, HttpServer
from monitor.store import Action, Store, Verdict
from tests.conftest import PROBES

POLICY = """\
database: {database}
models:
  bot:
    versions: {{v1: {{path: w}}, v2: {{path: w}}}}
    baseline: v1
    live: v2
suites: [probes/arithmetic]
"""


@pytest.fixture()
def server(tmp_path: Path, store: Store) -> Any:
    shutil.copytree(PROBES / "arithmetic", tmp_path / "probes" / "arithmetic")
    (tmp_path / "w").mkdir()
    (tmp_path / "forgetmenot.yaml").write_text(POLICY.format(database=store.url))
    config = load_config(tmp_path / "forgetmenot.yaml")
    for n in range(5):
        store.save_verdict(Verdict(model="bot", candidate="v2", baseline="v1", suite="arithmetic",
                                   capability="arithmetic", content_hash="h", phase="PASS",
                                   diagnosis="none", reason=f"verdict {n}"), [])
        store.add_action(Action(model="bot", kind="alert", trigger="verdict", status="done", detail=f"a{n}"))
    running = HttpServer(Api(config, store), port=0).start()
    yield running
    running.stop()


def request(port: int, method: str, path: str) -> tuple[int, dict[str, str], Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path)
        reply = conn.getresponse()
        body = reply.read().decode()
        return reply.status, dict(reply.getheaders()), json.loads(body) if body else None
    finally:
        conn.close()


@pytest.mark.parametrize(("method", "path"), [("DELETE", "/metrics"), ("POST", "/api/v1/actions"),
                                              ("PUT", "/healthz"), ("PATCH", "/api/v1/models")])
def test_only_get_and_head_are_served(server: HttpServer, method: str, path: str) -> None:
    status, headers, body = request(server.port, method, path)
    assert (status, headers["Allow"]) == (405, "GET, HEAD")
    assert body == {"error": f"{method} is not allowed here: only candidates are written"}


def test_head_answers_the_headers_without_a_body(server: HttpServer) -> None:
    status, headers, body = request(server.port, "HEAD", "/healthz")
    assert status == 200 and body is None and int(headers["Content-Length"]) > 0


@pytest.mark.parametrize(("query", "error"), [
    ("limit=0", "limit must be a whole number from 1 to 1000"),
    ("limit=-1", "limit must be a whole number from 1 to 1000"),
    ("limit=abc", "limit must be a whole number from 1 to 1000"),
    ("limit=1001", "limit must be a whole number from 1 to 1000"),
    ("limit=1&limit=2", "query parameter 'limit' must be given once, at most 200 characters"),
    ("model=" + "x" * 201, "query parameter 'model' must be given once, at most 200 characters"),
    ("colour=red", "unknown query parameter 'colour'; known: model, limit"),
    ("&".join(f"model{n}=x" for n in range(11)), "too many query parameters"),
])
def test_bad_query_parameters_get_400_with_the_reason(server: HttpServer, query: str, error: str) -> None:
    assert request(server.port, "GET", f"/api/v1/actions?{query}")[::2] == (400, {"error": error})


def test_limit_returns_the_newest_first(server: HttpServer) -> None:
    status, _, actions = request(server.port, "GET", "/api/v1/actions?limit=2")
    assert status == 200 and [a["detail"] for a in actions] == ["a4", "a3"]
    status, _, verdicts = request(server.port, "GET", "/api/v1/verdicts?model=bot&limit=3")
    assert status == 200 and [v["reason"] for v in verdicts] == ["verdict 4", "verdict 3", "verdict 2"]


@pytest.mark.parametrize(("run", "status"), [("99999999999999999999999", 400), ("2147483648", 400),
                                             ("2147483647", 404), ("abc", 404)])
def test_run_ids_out_of_range_are_a_400_not_a_500(server: HttpServer, run: str, status: int) -> None:
    assert request(server.port, "GET", f"/api/v1/runs/{run}")[0] == status


def test_a_broken_handler_answers_500_without_a_traceback(server: HttpServer, store: Store,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("postgresql://monitor:s3cret@db/forgetmenot went away")

    monkeypatch.setattr(store, "actions", broken)
    status, _, body = request(server.port, "GET", "/api/v1/actions")
    assert (status, body) == (500, {"error": "internal error; the monitor's log has the details"})
    assert request(server.port, "GET", "/healthz")[0] == 200  # the server goes on


def test_half_open_clients_neither_pin_threads_nor_block_others(server: HttpServer,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """300 half-open requests once pinned 300 threads. Now at most `workers` are served at once and
    each client has `timeout` seconds to send its request."""
    monkeypatch.setattr(served._Quiet, "timeout", 1.0)
    before = threading.active_count()
    stalled = []
    for _ in range(served._BoundedServer.workers + 10):
        conn = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
        stalled.append(conn)
    time.sleep(0.5)
    assert threading.active_count() <= before + served._BoundedServer.workers
    began = time.monotonic()
    status = request(server.port, "GET", "/healthz")[0]
    assert status == 200 and time.monotonic() - began < 8  # served once the stalled ones timed out
    for conn in stalled:
        conn.close()
