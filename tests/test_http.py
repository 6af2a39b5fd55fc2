"""The HTTP surface under requests it must refuse: other methods, bad query parameters, ids out of
range, a handler that breaks, and clients that open a socket and never finish their request.
Each reproduces a finding of the security review, on a real server and a real store."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from monitor.policy.loading import load_config, load_suites
from monitor.service.access import Access, _digest
from monitor.service.http import Api, HttpServer, ServerLimits
from monitor.store import Action, Store, Verdict
from monitor.testing.slowloris import SlowClients
from tests.conftest import PROBES, database_switch, postgres_database

POLICY = """\
database: {database}
models:
  bot:
    versions: {{v1: {{path: w}}, v2: {{path: w}}}}
    baseline: v1
    live: v2
suites: [probes/arithmetic]
"""


TOKEN = "t0ken-for-the-monitor-api-0123456789"


def write_policy(tmp_path: Path, store: Store) -> Path:
    shutil.copytree(PROBES / "arithmetic", tmp_path / "probes" / "arithmetic")
    (tmp_path / "w").mkdir()
    (tmp_path / "forgetmenot.yaml").write_text(POLICY.format(database=store.url))
    return tmp_path / "forgetmenot.yaml"


@pytest.fixture()
def server(tmp_path: Path, store: Store) -> Any:
    config = load_config(write_policy(tmp_path, store))
    for n in range(5):
        store.save_verdict(Verdict(model="bot", candidate="v2", baseline="v1", suite="arithmetic",
                                   capability="arithmetic", content_hash="h", phase="PASS",
                                   diagnosis="none", reason=f"verdict {n}"), [])
        store.add_action(Action(model="bot", kind="alert", trigger="verdict", status="done", detail=f"a{n}"))
    running = HttpServer(Api(config, store), port=0).start()
    yield running
    running.stop()


def request(port: int, method: str, path: str) -> tuple[int, http.client.HTTPMessage, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path)
        reply = conn.getresponse()
        body = reply.read().decode()
        return reply.status, reply.headers, json.loads(body) if body else None
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
    ("limit=%C2%B2", "limit must be a whole number from 1 to 1000"),
    ("model=bot%00", "query parameter 'model' holds a control character"),
])
def test_bad_query_parameters_get_400_with_the_reason(server: HttpServer, query: str, error: str) -> None:
    assert request(server.port, "GET", f"/api/v1/actions?{query}")[::2] == (400, {"error": error})


def test_limit_returns_the_newest_first(server: HttpServer) -> None:
    status, _, actions = request(server.port, "GET", "/api/v1/actions?limit=2")
    assert status == 200 and [a["detail"] for a in actions] == ["a4", "a3"]
    status, _, verdicts = request(server.port, "GET", "/api/v1/verdicts?model=bot&limit=3")
    assert status == 200 and [v["reason"] for v in verdicts] == ["verdict 4", "verdict 3", "verdict 2"]


@pytest.mark.parametrize(("run", "status"), [("99999999999999999999999", 400), ("2147483648", 400),
                                             ("2147483647", 404), ("abc", 404), ("%C2%B2", 404)])
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


def read_all(conn: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    while chunk := conn.recv(4096):
        received += chunk
    return received


def healthz_times(port: int, tries: int, scheme: str = "http",
                  context: ssl.SSLContext | None = None) -> list[float]:
    """Seconds each of `tries` GET /healthz took, a second apart; a refusal or timeout fails."""
    took = []
    for _ in range(tries):
        began = time.monotonic()
        url = f"{scheme}://127.0.0.1:{port}/healthz"
        with urllib.request.urlopen(url, timeout=5, context=context) as reply:
            assert reply.status == 200
        took.append(time.monotonic() - began)
        time.sleep(1.0)
    return took


def test_slow_clients_never_keep_healthz_from_an_answer(server: HttpServer) -> None:
    """Twice the server's old 16 worker threads, each client sending a byte every 2 s: a per-read
    timeout never ends them. On the event loop each costs a coroutine, and health is answered."""
    with SlowClients(server.port, count=32, every_s=2.0):
        time.sleep(1.0)
        took = healthz_times(server.port, tries=6)
    assert max(took) < 1.0, took


def test_a_request_head_has_a_deadline_that_trickling_bytes_do_not_renew(tmp_path: Path,
                                                                         store: Store) -> None:
    limits = ServerLimits(head_timeout_s=2.0)
    config = load_config(write_policy(tmp_path, store))
    server = HttpServer(Api(config, store, limits=limits), port=0).start()
    try:
        with SlowClients(server.port, count=8, every_s=0.5) as slow:
            time.sleep(4.0)
            when = list(slow.first_closed)
    finally:
        server.stop()
    assert all(t is not None and t < 3.5 for t in when), when


def test_a_body_that_does_not_arrive_in_time_is_408_and_a_short_one_never_500(tmp_path: Path,
                                                                               store: Store) -> None:
    limits = ServerLimits(body_timeout_s=1.0)
    config = load_config(write_policy(tmp_path, store))
    access = Access(tokens=[_digest(TOKEN.encode())])
    server = HttpServer(Api(config, store, access=access, limits=limits), port=0).start()
    head = (b"POST /api/v1/models/bot/candidates HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Length: 100\r\n\r\n")
    try:
        stalled = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        stalled.sendall(head + b'{"version": ')
        began = time.monotonic()
        answer = read_all(stalled)
        assert answer.startswith(b"HTTP/1.1 408 ") and time.monotonic() - began < 3.0, answer
        assert b"the body did not arrive within 1 s" in answer
        short = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        short.sendall(head + b'{"version": ')
        short.shutdown(socket.SHUT_WR)
        assert b" 500 " not in read_all(short)
        assert request(server.port, "GET", "/healthz")[0] == 200
    finally:
        server.stop()
    assert store.candidates("bot") == []


@pytest.mark.postgres
def test_metrics_serve_the_last_good_state_while_the_database_is_away(tmp_path: Path) -> None:
    """A scrape that fails loses every series at once and Grafana goes blank exactly when on-call
    looks: the last good state is served instead, and a counter says it is stale."""
    with postgres_database() as url:
        store = Store(url)
        store.save_verdict(Verdict(model="bot", candidate="v2", baseline="v1", suite="arithmetic",
                                   capability="arithmetic", content_hash="h", phase="FAIL",
                                   diagnosis="knowledge_loss", reason="r"), [])
        config = load_config(write_policy(tmp_path, store))
        server = HttpServer(Api(config, store), port=0).start()
        try:
            before = scrape(server.port)
            with database_switch(url) as allow:
                allow(False)
                during = scrape(server.port)
                ready = request(server.port, "GET", "/readyz")
                alive = request(server.port, "GET", "/healthz")[0]
        finally:
            server.stop()
            store.close()
    assert 'forgetmenot_verdict_phase{' in before and "forgetmenot_exposition_errors_total 0.0" in before
    assert before.split("# HELP forgetmenot_exposition_errors")[0] in during
    assert "forgetmenot_exposition_errors_total 1.0" in during
    assert ready[0] == 503 and ready[2]["reason"].startswith("database unreachable") and alive == 200


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        assert reply.status == 200
        return str(reply.read().decode())


def test_a_verdict_with_a_phase_this_version_does_not_know_is_shown_not_a_500(tmp_path: Path,
                                                                                store: Store) -> None:
    """A newer forgetmenot sharing the database may write a phase this one has no word for; every
    surface still answers, showing the word as written."""
    config = load_config(write_policy(tmp_path, store))
    [suite] = load_suites(config)
    saved = store.save_verdict(Verdict(model="bot", candidate="v2", baseline="v1", suite="arithmetic",
                                       capability="arithmetic", content_hash=suite.content_hash,
                                       phase="DEGRADED", diagnosis="something_new", reason="r"), [])
    server = HttpServer(Api(config, store, reports=tmp_path / "reports"), port=0).start()
    paths = ["/", "/models/bot", f"/verdicts/{saved.id}", "/api/v1/verdicts", "/api/v1/models", "/metrics",
             f"/api/v1/verdicts/{saved.id}", "/api/v1/gate?model=bot&version=v2&mode=metric"]
    try:
        answers = {path: fetch_text(server.port, path) for path in paths}
    finally:
        server.stop()
    assert {path: status for path, (status, _) in answers.items()} == dict.fromkeys(paths, 200)
    assert "DEGRADED" in answers[f"/verdicts/{saved.id}"][1]
    gate = json.loads(answers["/api/v1/gate?model=bot&version=v2&mode=metric"][1])
    [check] = gate["verdicts"]
    assert gate["decision"] == "error" and "'DEGRADED', unknown to this forgetmenot" in check["reason"]


def fetch_text(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_api_answers_typed_json_objects_integers_and_nulls(server: HttpServer, store: Store) -> None:
    """JSON columns are objects, run ids whole numbers and no diagnosis a null, never strings a
    client has to parse again; a verdict stored before verdicts carried their rules says null."""
    rules = '{"max_drop": 0.05, "confidence": 0.95}'
    saved = store.save_verdict(Verdict(model="bot", candidate="v2", baseline="v1", suite="arithmetic",
                                       capability="arithmetic", content_hash="h", phase="PASS",
                                       diagnosis="none", reason="held", candidate_runs="3",
                                       baseline_runs="1,2", rules=rules), [])
    status, _, verdict = request(server.port, "GET", f"/api/v1/verdicts/{saved.id}")
    assert status == 200
    assert (verdict["candidate_runs"], verdict["baseline_runs"]) == ([3], [1, 2])
    assert verdict["rules"] == {"max_drop": 0.05, "confidence": 0.95}
    assert verdict["diagnosis"] is None
    older = request(server.port, "GET", "/api/v1/verdicts?limit=1000")[2][-1]
    assert (older["rules"], older["candidate_runs"]) == (None, [])
    (model,) = request(server.port, "GET", "/api/v1/models")[2]
    assert model["capabilities"]["arithmetic"]["diagnosis"] is None
