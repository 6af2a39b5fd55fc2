"""Candidates and the retention gate with scripted backends, a real scheduler, a real HTTP server
and both databases: registration checks, probing at once, the answers rollouts read."""

from __future__ import annotations

import json
import tempfile
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from monitor.cli.app import app
from monitor.errors import CandidateError
from monitor.judge.gate import decide, wait
from monitor.policy.loading import load_suite
from monitor.present.gate import junit_xml
from monitor.probing.backends.fake import FakeBackend
from monitor.service.access import load_access
from monitor.service.http import Api, HttpServer
from monitor.service.scheduler import Monitor, open_monitor
from monitor.store import Store
from monitor.store.candidates import register
from monitor.store.versions import with_made
from monitor.vocabulary import Decision
from tests.test_judge import _answers, _gold
from tests.test_service import policy

TOKEN = "gate-test-token-0123456789"


def backends(tmp_path: Path) -> Any:
    """Right answers everywhere, except `bad*` versions (right choice, wrong words: alignment
    loss) and `broken*` versions (every request fails: an ERROR, never a FAIL)."""
    suite = load_suite(tmp_path / "probes" / "arithmetic")

    def load(config: Any, model: str, version: str) -> FakeBackend:
        if version.startswith("broken"):
            return FakeBackend(fail_on=lambda text: True)
        return FakeBackend(answers=_answers(suite, not version.startswith("bad")), preferred=_gold(suite))

    return load


def measured_monitor(tmp_path: Path, model_dir: Path, database: str | None = None) -> Monitor:
    """A monitor whose baseline (v1) and live (v2) versions are measured and judged."""
    monitor = open_monitor(policy(tmp_path, model_dir, database=database), load_backend=backends(tmp_path))
    assert monitor.cycle("bot", "v1", slot=1) and monitor.cycle("bot", "v2", slot=1)
    return monitor


def request(port: int, path: str, body: Any = None, token: str | None = TOKEN,
            content_type: str = "application/json") -> tuple[int, Any, Message]:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    headers = {"Content-Type": content_type} if data is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, headers=headers,
                                 method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=60) as reply:
            return reply.status, json.loads(reply.read()), reply.headers
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), exc.headers


def serving(monitor: Monitor, tmp_path: Path, tokens: bool = True) -> HttpServer:
    token_file = tmp_path / "tokens"
    token_file.write_text(TOKEN + "\n")
    access = load_access(token_file=token_file) if tokens else None
    api = Api(monitor.config, monitor.store, monitor.registry, monitor.not_ready, access,
              on_candidate=monitor.sync_candidates)
    return HttpServer(api, port=0).start()


def test_a_registered_candidate_is_probed_at_once_and_the_gate_answers_each_client(
        store: Store, tmp_path: Path, tiny_model_dir: Path) -> None:
    monitor = measured_monitor(tmp_path, tiny_model_dir, database=store.url)
    monitor.start()
    server = serving(monitor, tmp_path)
    try:
        for name in ("good", "bad", "broken"):
            status, body, headers = request(server.port, "/api/v1/models/bot/candidates",
                                            {"version": name, "path": str(tiny_model_dir)})
            assert status == 201, body
            assert headers["Location"] == f"/api/v1/gate?model=bot&version={name}"
        status, good, _ = request(server.port, "/api/v1/gate?model=bot&version=good&wait=60")
        assert (status, good["decision"], good["passed"]) == (200, "pass", True), good
        # judged against the baseline and against live, on every suite
        assert sorted((v["baseline"], v["suite"]) for v in good["verdicts"]) == [
            ("v1", "arithmetic"), ("v1", "fluency"), ("v2", "arithmetic"), ("v2", "fluency")]

        status, bad, _ = request(server.port, "/api/v1/gate?model=bot&version=bad&wait=60")
        assert (status, bad["decision"], bad["passed"]) == (412, "fail", False), bad
        failed = {(v["baseline"], v["diagnosis"]) for v in bad["verdicts"] if v["phase"] == "FAIL"}
        assert failed == {("v1", "alignment_loss"), ("v2", "alignment_loss")}
        assert "arithmetic against v1: FAIL (alignment_loss)" in bad["reason"]
        # Argo's web metric: 200 whatever was decided, the decision in the JSON
        assert request(server.port, "/api/v1/gate?model=bot&version=bad&mode=metric")[:2][0] == 200

        status, broken, headers = request(server.port, "/api/v1/gate?model=bot&version=broken&wait=60")
        assert (status, broken["decision"], broken["passed"]) == (503, "error", False), broken
        assert headers["Retry-After"] == "10"
        status, metric, _ = request(server.port, "/api/v1/gate?model=bot&version=broken&mode=metric")
        assert (status, metric["decision"]) == (200, "error")
    finally:
        server.stop()
        monitor.stop()
    # A failing candidate is not live: nothing was acted on
    assert [a.kind for a in store.actions("bot")] == []
    assert store.live_version(monitor.config, "bot") == "v2"


def loaded_from_weights(tmp_path: Path) -> Any:
    """The baseline and live versions scripted, every candidate loaded from its own weights by
    the real in-process backend, as `serve` loads it."""
    from monitor.probing.factory import backend_for

    scripted = backends(tmp_path)

    def load(config: Any, model: str, version: str) -> Any:
        if version in ("v1", "v2"):
            return scripted(config, model, version)
        return backend_for(config, model, version)

    return load


def unloadable_weights(tmp_path: Path, model_dir: Path) -> dict[str, dict[str, str]]:
    """Candidates whose weights sit where they may, but will not load: a pickle torch refuses to
    unpickle, and a file named as a GGUF that is not one."""
    import pickle
    import shutil

    pickled = tmp_path / "pickled"
    shutil.copytree(model_dir, pickled, ignore=shutil.ignore_patterns("*.safetensors"))
    refused = pickle.dumps({"weight": print}, protocol=2)  # a global: not plain tensors and numbers
    (pickled / "pytorch_model.bin").write_bytes(refused)
    not_gguf = tmp_path / "not-gguf"
    not_gguf.mkdir()
    (not_gguf / "model.gguf").write_bytes(b"GGUF but nothing a reader can use" * 10)
    return {"pickled": {"path": str(pickled)},
            "not-gguf": {"path": str(not_gguf), "gguf_file": "model.gguf"}}


def test_a_candidate_whose_weights_will_not_load_is_an_error_at_the_gate(
        store: Store, tmp_path: Path, tiny_model_dir: Path) -> None:
    """Each suite gets an `error` run, the judge an ERROR, the gate `error`: never pending for ever."""
    path = policy(tmp_path, tiny_model_dir, database=store.url)
    monitor = open_monitor(path, load_backend=loaded_from_weights(tmp_path))
    assert monitor.cycle("bot", "v1", slot=1) and monitor.cycle("bot", "v2", slot=1)
    monitor.start()
    server = serving(monitor, tmp_path)
    try:
        for name, weights in unloadable_weights(tmp_path, tiny_model_dir).items():
            body = {"version": name, **weights}
            status, body, _ = request(server.port, "/api/v1/models/bot/candidates", body)
            assert status == 201, body
            status, gate, _ = request(server.port, f"/api/v1/gate?model=bot&version={name}&wait=60")
            assert (status, gate["decision"]) == (503, "error"), gate
            runs = store.runs(version=name)
            assert sorted(r.suite for r in runs) == ["arithmetic", "fluency"]
            assert all(r.status == "error" and (r.error or "").startswith("load: ") for r in runs), runs
            assert {v["phase"] for v in gate["verdicts"]} == {"ERROR"}
    finally:
        server.stop()
        monitor.stop()


@pytest.mark.parametrize("gguf_file", ["..", ".", "sub/model.gguf", "..\\model.gguf"])
def test_a_gguf_file_that_is_not_a_plain_file_name_is_refused_at_registration(
        tmp_path: Path, tiny_model_dir: Path, gguf_file: str) -> None:
    monitor = open_monitor(policy(tmp_path, tiny_model_dir), load_backend=backends(tmp_path))
    server = serving(monitor, tmp_path)
    try:
        body = {"version": "c", "path": str(tiny_model_dir), "gguf_file": gguf_file}
        status, reply, _ = request(server.port, "/api/v1/models/bot/candidates", body)
    finally:
        server.stop()
    assert status == 400 and reply["error"].startswith("gguf_file: "), reply
    assert monitor.store.candidates("bot") == []


def test_the_gate_waits_while_pending_and_says_what_it_waits_for(tmp_path: Path,
                                                                  tiny_model_dir: Path) -> None:
    monitor = measured_monitor(tmp_path, tiny_model_dir)
    register(monitor.store, monitor.config, "bot", {"version": "later", "path": str(tiny_model_dir)}, "test")
    server = serving(monitor, tmp_path)  # the scheduler is not started: nothing probes `later`
    try:
        began = time.monotonic()
        status, body, headers = request(server.port, "/api/v1/gate?model=bot&version=later&wait=2")
        assert time.monotonic() - began >= 1.0, "it waited before answering"
        assert (status, body["decision"], headers["Retry-After"]) == (503, "pending", "10")
        assert "arithmetic against v1" in body["missing"] and body["waited_s"] >= 1.0
        assert request(server.port, "/api/v1/gate?model=bot&version=later&mode=metric")[0] == 503
        # answered at once once judged
        assert monitor.cycle("bot", "later", slot=2)
        assert request(server.port, "/api/v1/gate?model=bot&version=later")[1]["decision"] == "pass"
        assert request(server.port, "/api/v1/gate?model=bot&version=nope")[0] == 404
        assert request(server.port, "/api/v1/gate?model=bot")[0] == 400
        assert request(server.port, "/api/v1/gate?model=bot&version=later&wait=9999")[0] == 400
        assert request(server.port, "/api/v1/gate?model=bot&version=later&mode=yes")[0] == 400
        assert request(server.port, "/api/v1/gate?model=bot&version=v1")[1]["decision"] == "pass"
    finally:
        server.stop()


def test_wait_asks_again_until_its_timeout(tmp_path: Path, tiny_model_dir: Path) -> None:
    monitor = measured_monitor(tmp_path, tiny_model_dir)
    register(monitor.store, monitor.config, "bot", {"version": "c", "path": str(tiny_model_dir)}, "test")
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    gate = wait(monitor.store, monitor.config, monitor.suites, "bot", "c", 10, poll_s=2,
                clock=lambda: now[0], sleep=sleep)
    assert gate.decision == Decision.PENDING and slept == [2] * 5 and gate.waited_s == 10
    monitor.cycle("bot", "c", slot=1)
    assert wait(monitor.store, monitor.config, monitor.suites, "bot", "c", 10).decision == Decision.PASS


def test_registration_refuses_what_it_cannot_keep(store: Store, tmp_path: Path, tiny_model_dir: Path) -> None:
    monitor = open_monitor(policy(tmp_path, tiny_model_dir, database=store.url))
    config = monitor.config

    def refused(body: Any, model: str = "bot") -> str:
        with pytest.raises(CandidateError) as caught:
            register(store, config, model, body, "test")
        return str(caught.value)

    assert "no model 'nope'" in refused({"version": "c", "path": str(tiny_model_dir)}, model="nope")
    assert "not a safe name" in refused({"version": "../c", "path": str(tiny_model_dir)})
    assert "'version' is required" in refused({"path": str(tiny_model_dir)})
    assert "unknown field(s) weights" in refused({"version": "c", "weights": "x"})
    assert "not under an allowed root" in refused({"version": "c", "path": "/etc"})
    assert "not under an allowed root" in refused({"version": "c", "path": f"{tiny_model_dir}/../../.."})
    assert "does not exist" in refused({"version": "c", "path": str(tiny_model_dir.parent / "missing")})
    assert "runs in process" in refused({"version": "c", "served_name": "c"})
    assert "must be a JSON object" in refused(["c"])
    assert "path: Input should be a valid string" in refused({"version": "c", "path": 3})
    with pytest.raises(CandidateError) as taken:
        register(store, config, "bot", {"version": "v1", "path": str(tiny_model_dir)}, "test")
    assert taken.value.conflict and "already has a version 'v1'" in str(taken.value)

    row = register(store, config, "bot", {"version": "c", "path": str(tiny_model_dir)}, "test")
    assert row.source == "candidate:test"
    assert "c" in with_made(config, store).models["bot"].versions
    assert list(with_made(config, store).models["bot"].versions)[-1] == "c", "candidates come last"
    bot = config.models["bot"]
    limited = config.model_copy(update={"models": {"bot": bot.model_copy(
        update={"candidates": bot.candidates.model_copy(update={"max": 1})})}})
    with pytest.raises(CandidateError, match="already has 1 candidates"):
        register(store, limited, "bot", {"version": "d", "path": str(tiny_model_dir)}, "test")


def test_writes_need_credentials_and_a_bounded_json_body(tmp_path: Path, tiny_model_dir: Path) -> None:
    monitor = open_monitor(policy(tmp_path, tiny_model_dir))
    body = {"version": "c", "path": str(tiny_model_dir)}
    open_server = serving(monitor, tmp_path, tokens=False)
    try:
        status, reply, _ = request(open_server.port, "/api/v1/models/bot/candidates", body, token=None)
        assert status == 403 and "needs credentials" in reply["error"]
    finally:
        open_server.stop()
    server = serving(monitor, tmp_path)
    try:
        path = "/api/v1/models/bot/candidates"
        assert request(server.port, path, body, token=None)[0] == 401
        assert request(server.port, path, body, token="wrong")[0] == 401
        assert request(server.port, path, body, content_type="text/plain")[0] == 400
        reply = request(server.port, path, b"{not json")[1]
        assert reply["error"].startswith("the body is not valid JSON")
        assert request(server.port, path, b"x" * 20000)[0] == 400
        assert request(server.port, "/api/v1/models/nope/candidates", body)[0] == 400
        assert request(server.port, "/api/v1/gate", body)[0] == 405
        assert request(server.port, path, body)[0] == 201
        status, reply, _ = request(server.port, path, body)
        assert status == 409 and "already has a version 'c'" in reply["error"]
        status, listed, _ = request(server.port, path)
        assert status == 200 and [(c["version"], c["by"], c["spec"]["path"]) for c in listed] == [
            ("c", "api", str(tiny_model_dir))]
    finally:
        server.stop()


def test_every_replica_picks_up_a_candidate_from_the_database(store: Store, tmp_path: Path,
                                                             tiny_model_dir: Path) -> None:
    path = policy(tmp_path, tiny_model_dir, database=store.url)
    first, second = (open_monitor(path, load_backend=backends(tmp_path)) for _ in range(2))
    second.holder = "other-replica:1"
    for monitor in (first, second):
        monitor.beat_every = 3600  # the heartbeat's own sync must not pick c up before the test's
        monitor.start()
    try:
        register(store, first.config, "bot", {"version": "c", "path": str(tiny_model_dir)}, "test")
        assert first.sync_candidates() == [("bot", "c")] and second.sync_candidates() == [("bot", "c")]
        assert first.sync_candidates() == [], "scheduled once per monitor"
        assert {j.id for j in second.scheduler.get_jobs()} == {"probe:bot:v1", "probe:bot:v2", "probe:bot:c"}
        deadline = time.monotonic() + 60
        # Both suites' runs, not the first alone: a stop between them would leave only one.
        while len(store.runs(version="c", status="complete")) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        first.stop()
        second.stop()
    runs = store.runs(version="c")
    assert len(runs) == 2, "two suites probed once, by one of the two replicas"
    assert len({r.holder for r in runs}) == 1


def test_gate_command_prints_the_table_exits_with_the_answer_and_writes_junit(
        tmp_path: Path, tiny_model_dir: Path) -> None:
    monitor = measured_monitor(tmp_path, tiny_model_dir)
    config = str(tmp_path / "forgetmenot.yaml")
    runner = CliRunner()
    added = runner.invoke(app, ["candidate", "add", "bot", "bad", "--path", str(tiny_model_dir),
                                "-c", config])
    assert added.exit_code == 0, added.output
    assert runner.invoke(app, ["candidate", "add", "bot", "bad", "--path", str(tiny_model_dir),
                               "-c", config]).exit_code == 2
    pending = runner.invoke(app, ["gate", "bot", "bad", "-c", config, "--wait", "0"])
    assert pending.exit_code == 5 and "pending" in pending.output
    monitor.cycle("bot", "bad", slot=3)
    junit = tmp_path / "out" / "gate.xml"
    failed = runner.invoke(app, ["gate", "bot", "bad", "-c", config, "--junit", str(junit)],
                           terminal_width=200)
    assert failed.exit_code == 1 and "fail: arithmetic against v1: FAIL (alignment_loss)" in failed.output
    suite = ET.parse(junit).getroot()
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("4", "2", "0")
    failures = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None]
    assert failures == ["arithmetic against v1", "arithmetic against v2"]
    assert runner.invoke(app, ["gate", "bot", "v2", "-c", config]).exit_code == 0
    assert runner.invoke(app, ["gate", "bot", "nope", "-c", config]).exit_code == 2


def test_junit_marks_errors_and_muted_suites(tmp_path: Path, tiny_model_dir: Path) -> None:
    monitor = measured_monitor(tmp_path, tiny_model_dir)
    register(monitor.store, monitor.config, "bot", {"version": "broken", "path": str(tiny_model_dir)}, "t")
    monitor.cycle("bot", "broken", slot=2)
    gate = decide(monitor.store, monitor.config, monitor.suites, "bot", "broken")
    assert gate.decision == Decision.ERROR and not gate.passed
    root = ET.fromstring(junit_xml(gate).split("\n", 1)[1])
    assert root.get("errors") == "4" and root.get("failures") == "0"
    assert {p.get("name"): p.get("value") for p in root.iter("property")}["decision"] == "error"


def test_weights_outside_the_roots_are_refused_however_they_are_named(tmp_path: Path,
                                                                     tiny_model_dir: Path) -> None:
    monitor = open_monitor(policy(tmp_path, tiny_model_dir))
    store, config = monitor.store, monitor.config
    outside = Path(tempfile.mkdtemp(prefix="fmn-outside-"))  # not under the default root
    (tiny_model_dir.parent / "sneaky").symlink_to(outside)

    def refused(body: dict[str, Any]) -> str:
        with pytest.raises(CandidateError) as caught:
            register(store, config, "bot", {"version": "c", **body}, "test")
        return str(caught.value)

    assert "give the candidate's weights as path" in refused({"gguf_file": "model.gguf"})
    assert "a file name inside path" in refused({"path": str(tiny_model_dir), "gguf_file": "/etc/passwd"})
    assert "a file name inside path" in refused({"path": str(tiny_model_dir), "gguf_file": "../x.gguf"})
    assert "not under an allowed root" in refused({"path": str(tiny_model_dir.parent / "sneaky")})
    assert "give path, not served_name" in refused({"path": str(tiny_model_dir), "served_name": "x"})
    assert "kept for the versions recovery" in refused({"version": "v2-r7", "path": str(tiny_model_dir)})
    assert "no control characters" in refused({"path": str(tiny_model_dir) + "\x00"})

    # A relative path (from the policy's folder) is kept resolved: every replica loads what was checked
    assert tmp_path.parent == tiny_model_dir.parent, "pytest keeps both under one base folder"
    (tiny_model_dir.parent / "alias").symlink_to(tiny_model_dir)
    row = register(store, config, "bot", {"version": "c", "path": "../alias"}, "test")
    assert json.loads(row.spec or "{}")["path"] == str(tiny_model_dir.resolve())
    # ... and a kept path that has left the roots since (its folder swapped) is not loaded.
    row.spec = json.dumps({"path": str(outside)})
    with store.session() as s:
        s.add(row)
        s.commit()
    assert "c" not in with_made(config, store).models["bot"].versions
    outside.rmdir()


def test_a_retired_candidate_is_no_longer_probed_and_keeps_its_name(tmp_path: Path,
                                                                   tiny_model_dir: Path) -> None:
    monitor = measured_monitor(tmp_path, tiny_model_dir)
    monitor.start()
    server = serving(monitor, tmp_path)
    try:
        path = "/api/v1/models/bot/candidates"
        assert request(server.port, path, {"version": "c", "path": str(tiny_model_dir)})[0] == 201
        assert "probe:bot:c" in {j.id for j in monitor.scheduler.get_jobs()}
        deleted = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}/c", method="DELETE",
                                         headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(deleted, timeout=10) as reply:
            assert reply.status == 200 and json.loads(reply.read())["by"] == "api"
        monitor.sync_candidates()
        assert "probe:bot:c" not in {j.id for j in monitor.scheduler.get_jobs()}
        assert request(server.port, "/api/v1/gate?model=bot&version=c")[0] == 404
        assert request(server.port, path, {"version": "c", "path": str(tiny_model_dir)})[0] == 409
        assert request(server.port, path)[1] == []
    finally:
        server.stop()
        monitor.stop()
    runner = CliRunner()
    config = str(tmp_path / "forgetmenot.yaml")
    assert runner.invoke(app, ["candidate", "retire", "bot", "c", "-c", config]).exit_code == 2


def test_a_candidate_pages_no_one_and_waits_for_the_current_rules(tmp_path: Path,
                                                                  tiny_model_dir: Path) -> None:
    monitor = measured_monitor(tmp_path, tiny_model_dir)
    register(monitor.store, monitor.config, "bot", {"version": "bad", "path": str(tiny_model_dir)}, "t")
    monitor.cycle("bot", "bad", slot=2)
    assert decide(monitor.store, monitor.config, monitor.suites, "bot", "bad").decision == Decision.FAIL
    server = serving(monitor, tmp_path)
    try:
        req = urllib.request.Request(f"http://127.0.0.1:{server.port}/metrics",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req, timeout=10) as reply:
            metrics = reply.read().decode()
    finally:
        server.stop()
    live = ('forgetmenot_verdict_phase{baseline="v1",capability="arithmetic",model="bot",phase="PASS",'
            'version="v2"} 1.0')
    assert live in metrics, "live's verdicts are exported"
    assert 'version="bad"' not in metrics.split("forgetmenot_verdict_phase", 1)[1], "a candidate never pages"
    tightened = monitor.config.model_copy(update={"policy": monitor.config.policy.model_copy(update={
        "defaults": monitor.config.policy.defaults.model_copy(update={"max_drop": 0.5})})})
    gate = decide(monitor.store, tightened, monitor.suites, "bot", "bad")
    assert gate.decision == Decision.PENDING and "judged under other rules" in gate.checks[0].reason


def test_waiting_requests_are_coroutines_and_never_take_a_worker(tmp_path: Path,
                                                                  tiny_model_dir: Path) -> None:
    """More requests wait than the server has worker threads, and health is still answered at once;
    past `MAX_WAITING` a request gets the answer as it stands instead of waiting."""
    import concurrent.futures

    from monitor.service.rollouts import MAX_WAITING

    asking = MAX_WAITING + 16
    monitor = measured_monitor(tmp_path, tiny_model_dir)
    register(monitor.store, monitor.config, "bot", {"version": "later", "path": str(tiny_model_dir)}, "t")
    server = serving(monitor, tmp_path)
    try:
        with concurrent.futures.ThreadPoolExecutor(asking) as pool:
            asked = [pool.submit(request, server.port, "/api/v1/gate?model=bot&version=later&wait=4")
                     for _ in range(asking)]
            time.sleep(1.0)
            began = time.monotonic()
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=10) as reply:
                assert reply.status == 200 and time.monotonic() - began < 1.0
            waited = sorted(f.result()[1]["waited_s"] for f in asked)
    finally:
        server.stop()
    at_once, kept = waited[:16], waited[16:]
    assert at_once == [0.0] * 16 and min(kept) >= 3.0, "MAX_WAITING wait, the rest answer at once"


def test_a_database_failure_is_not_a_name_conflict(tmp_path: Path, tiny_model_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from monitor.errors import StoreError

    monitor = open_monitor(policy(tmp_path, tiny_model_dir))

    def broken(row: Any) -> Any:
        raise StoreError("database unreachable: OperationalError")

    monkeypatch.setattr(monitor.store, "add_made_version", broken)
    with pytest.raises(StoreError):
        register(monitor.store, monitor.config, "bot", {"version": "c", "path": str(tiny_model_dir)}, "t")
    server = serving(monitor, tmp_path)
    try:
        status, body, headers = request(server.port, "/api/v1/models/bot/candidates",
                                        {"version": "c", "path": str(tiny_model_dir)})
        assert (status, headers["Retry-After"]) == (503, "10") and "unavailable" in body["error"]
        assert request(server.port, "/api/v1/models/bot/candidates", b"[" * 15000)[0] == 400
        assert request(server.port, "/api/v1/models/bot/candidates", ["c"])[1]["error"].startswith(
            "the body must be a JSON object")
    finally:
        server.stop()
