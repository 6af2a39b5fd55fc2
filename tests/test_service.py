"""The always-on monitor: scheduled cycles, replica-safe claims, HTTP API, graceful stop."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from monitor.probing.backends.fake import FakeBackend
from monitor.service.http import Api, HttpServer
from monitor.service.scheduler import Monitor, open_monitor
from monitor.store import Store
from tests.conftest import PROBES


def policy(tmp_path: Path, model_dir: Path, database: str | None = None, every: str = "1h") -> Path:
    for name in ("arithmetic", "fluency"):
        if not (tmp_path / "probes" / name).exists():
            shutil.copytree(PROBES / name, tmp_path / "probes" / name)
    path = tmp_path / "forgetmenot.yaml"
    path.write_text(f"""\
database: {database or "sqlite:///fmn.db"}
schedule: {{every: {every}, jitter: 0s}}
models:
  bot:
    backend: {{kind: transformers, device: cpu, dtype: float32, batch_size: 8}}
    versions:
      v1: {{path: {model_dir}}}
      v2: {{path: {model_dir}}}
    baseline: v1
    live: v2
suites: [probes/arithmetic, probes/fluency]
policy:
  defaults: {{min_items: 5}}
""")
    return path


def get(port: int, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
            body = reply.read().decode()
            status = reply.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read().decode(), exc.code
    return status, (body if path == "/metrics" else json.loads(body))


def test_a_cycle_probes_every_suite_and_judges_live_against_baseline(store: Store, tmp_path: Path,
                                                                   tiny_model_dir: Path) -> None:
    monitor = open_monitor(policy(tmp_path, tiny_model_dir, database=store.url))
    assert monitor.watched() == [("bot", "v1"), ("bot", "v2")]
    assert monitor.cycle("bot", "v1", slot=1) and monitor.cycle("bot", "v2", slot=1)
    runs = monitor.store.runs(status="complete")
    assert sorted((r.version, r.suite) for r in runs) == [
        ("v1", "arithmetic"), ("v1", "fluency"), ("v2", "arithmetic"), ("v2", "fluency")]
    verdicts = monitor.store.verdicts(model="bot", candidate="v2")
    assert {v.capability: v.phase for v in verdicts} == {"arithmetic": "PASS", "fluency": "PASS"}


def test_each_slot_is_worked_once_across_replicas(store: Store, tmp_path: Path,
                                                  tiny_model_dir: Path) -> None:
    """Two monitors on one database (SQLite and the real PostgreSQL): one claims, the other skips."""
    path = policy(tmp_path, tiny_model_dir, database=store.url)
    first, second = open_monitor(path), open_monitor(path)
    second.holder = "other-replica:1"
    assert first.cycle("bot", "v1", slot=42) is True
    assert second.cycle("bot", "v1", slot=42) is False
    assert len(store.runs(version="v1")) == 2  # two suites, once each
    assert second.cycle("bot", "v1", slot=43) is True


def test_slots_agree_across_jitter() -> None:
    class Fake:
        def interval(self) -> float:
            return 600.0

    slot = Monitor.slot
    assert slot(Fake(), 6000.0 - 200) == slot(Fake(), 6000.0 + 200) == 10  # type: ignore[arg-type]


def test_http_api_serves_metrics_health_and_json(tmp_path: Path, tiny_model_dir: Path) -> None:
    monitor = open_monitor(policy(tmp_path, tiny_model_dir))
    monitor.cycle("bot", "v1", slot=1)
    monitor.cycle("bot", "v2", slot=1)
    server = HttpServer(Api(monitor.config, monitor.store, monitor.registry, monitor.not_ready),
                        port=0).start()
    try:
        status, text = get(server.port, "/metrics")
        assert status == 200 and 'forgetmenot_verdict_phase{baseline="v1",capability="arithmetic"' in text
        assert "forgetmenot_run_duration_seconds_bucket" in text
        asked = urllib.request.Request(f"http://127.0.0.1:{server.port}/metrics",
                                       headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(asked, timeout=10) as reply:  # as Prometheus asks for it
            assert reply.headers["Content-Encoding"] == "gzip"
            packed = reply.read()
        unpacked = gzip.decompress(packed).decode()
        assert len(packed) < len(unpacked) / 4
        assert unpacked.count("\n") == text.count("\n") and 'capability="arithmetic"' in unpacked
        assert get(server.port, "/healthz") == (200, {"status": "ok"})
        assert get(server.port, "/readyz")[0] == 503  # the scheduler is not running in this test
        status, models = get(server.port, "/api/v1/models")
        assert status == 200 and models[0]["live"] == "v2"
        assert models[0]["capabilities"]["arithmetic"]["phase"] == "PASS"
        status, verdicts = get(server.port, "/api/v1/verdicts?model=bot&capability=fluency")
        assert status == 200 and len(verdicts) == 1
        assert verdicts[0]["kinds"][0]["kind"] == "loglikelihood_rolling"
        run_id = monitor.store.runs()[0].id
        status, run = get(server.port, f"/api/v1/runs/{run_id}")
        assert status == 200 and run["status"] == "complete" and run["kinds"]
        assert get(server.port, "/api/v1/runs/999999")[0] == 404
        assert get(server.port, "/nope")[0] == 404
    finally:
        server.stop()


@pytest.mark.parametrize(("header", "gzipped"), [
    ("gzip", True), ("deflate, gzip;q=1.0, identity", True), ("GZIP", True),
    ("gzip;q=0", False), ("gzip; q=0.0", False), ("identity", False), ("", False)])
def test_metrics_are_gzipped_only_when_the_scraper_accepts_it(header: str, gzipped: bool) -> None:
    from monitor.service.http import _accepts_gzip

    assert _accepts_gzip(header) is gzipped


def test_scheduler_runs_jobs_and_stops_cleanly(store: Store, tmp_path: Path, tiny_model_dir: Path) -> None:
    monitor = open_monitor(policy(tmp_path, tiny_model_dir, database=store.url))
    monitor.start(run_now=True)
    try:
        assert monitor.not_ready() is None
        jobs = sorted(job.id for job in monitor.scheduler.get_jobs())
        deadline = time.monotonic() + 120
        while len(monitor.store.verdicts()) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        monitor.stop(wait=True)
    assert len(monitor.store.verdicts()) >= 2
    assert monitor.store.runs(status="running") == []
    assert jobs == ["probe:bot:v1", "probe:bot:v2"], "one job per watched version, from the policy"
    from sqlalchemy import inspect

    tables = inspect(Store(monitor.config.database_url()).engine).get_table_names()
    assert "apscheduler_jobs" not in tables, "nothing is pickled into the database (code execution)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sigterm_stops_serve_gracefully(tmp_path: Path, tiny_model_dir: Path) -> None:
    """A real `forgetmenot serve` process: ready, probing, then SIGTERM; nothing left 'running'."""
    path = policy(tmp_path, tiny_model_dir)
    port = _free_port()
    command = [sys.executable, "-m", "monitor.cli.app", "serve", "-c", str(path), "--port", str(port),
               "--run-now"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if get(port, "/readyz")[0] == 200 and Store(f"sqlite:///{tmp_path / 'fmn.db'}").runs():
                    break
            except OSError:
                pass
            time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert "stopping" in output
    store = Store(f"sqlite:///{tmp_path / 'fmn.db'}")
    assert store.runs(status="running") == []
    assert all(r.status in ("complete", "interrupted") for r in store.runs())


@pytest.mark.parametrize("jitter", ["30m", "45m"])
def test_jitter_of_half_an_interval_or_more_is_refused(tmp_path: Path, tiny_model_dir: Path,
                                                     jitter: str) -> None:
    from monitor.errors import ConfigError
    from monitor.policy.loading import load_config

    path = policy(tmp_path, tiny_model_dir)
    path.write_text(path.read_text().replace("jitter: 0s", f"jitter: {jitter}"))
    with pytest.raises(ConfigError, match=r"forgetmenot.yaml:2: schedule.jitter: must be under half"):
        load_config(path)


def test_migrations_create_the_schema_and_refuse_pre_migration_databases(tmp_path: Path) -> None:
    import sqlite3

    from monitor.errors import StoreError
    from monitor.store.migrate import current

    store = Store(f"sqlite:///{tmp_path / 'new.db'}")
    assert current(store.engine) == "0010"
    Store(f"sqlite:///{tmp_path / 'new.db'}")  # upgrading again is a no-op
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as conn:
        conn.execute("CREATE TABLE run (id INTEGER PRIMARY KEY)")
    with pytest.raises(StoreError, match="pre-release forgetmenot"):
        Store(f"sqlite:///{old}")


def test_a_database_a_newer_forgetmenot_upgraded_is_one_clear_error(tmp_path: Path,
                                                                      tiny_model_dir: Path) -> None:
    from sqlalchemy import text
    from typer.testing import CliRunner

    from monitor.cli.app import app

    path = policy(tmp_path, tiny_model_dir)
    Store(f"sqlite:///{tmp_path / 'fmn.db'}").close()
    with Store(f"sqlite:///{tmp_path / 'fmn.db'}").engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099_from_the_future'"))
    for command in (["history", "-c", str(path)], ["db", "upgrade", "-c", str(path)]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 3 and "Traceback" not in result.output, result.output
        assert "revision '0099_from_the_future', which this forgetmenot does not know" in result.output


def test_upgrade_drops_the_pickled_job_table_of_older_monitors(tmp_path: Path) -> None:
    """Rows of that table were unpickled on every replica: write access to the database was code
    execution. A database at 0004 that still has it loses it on the next start."""
    from sqlalchemy import inspect, text

    from monitor.store import make_engine
    from monitor.store.migrate import current, upgrade

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    upgrade(engine, "0004")  # as a monitor of schema 0004 left it, with its job table
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE apscheduler_jobs (id VARCHAR(191) PRIMARY KEY, job_state BLOB)"))
    engine.dispose()
    upgraded = Store(url)
    assert current(upgraded.engine) == "0010"
    assert "holder" in {c["name"] for c in inspect(upgraded.engine).get_columns("action")}
    assert "apscheduler_jobs" not in inspect(upgraded.engine).get_table_names()


def test_db_upgrade_command_on_postgres(tmp_path: Path, tiny_model_dir: Path) -> None:
    from typer.testing import CliRunner

    from monitor.cli.app import app
    from tests.conftest import postgres_database

    with postgres_database() as url:
        path = policy(tmp_path, tiny_model_dir, database=url)
        result = CliRunner().invoke(app, ["db", "upgrade", "-c", str(path)])
        assert result.exit_code == 0 and "database at revision 0010" in result.output


def test_runs_of_a_silent_monitor_are_reaped_others_are_not(store: Store) -> None:
    from datetime import timedelta

    from monitor.policy.suites import load_suite
    from monitor.probing.run import VersionRef, probe_suite

    suite = load_suite(PROBES / "arithmetic")
    probe_suite(store, FakeBackend(), suite, VersionRef("bot", "v1"), holder="alive:1")
    record = store.ensure_suite(suite.name, 1, suite.capability, suite.content_hash)
    for holder in ("dead:1", "alive:1"):
        store.start_run(model="bot", version="v1", suite_id=record.id, suite=suite.name,
                        capability=suite.capability, backend="fake", device="cpu", dtype="none",
                        holder=holder)
    store.beat("alive:1")
    assert store.reap(timedelta(seconds=30)) == 1
    statuses = {(r.holder, r.status) for r in store.runs()}
    assert statuses == {("alive:1", "complete"), ("dead:1", "interrupted"), ("alive:1", "running")}


def _serve(path: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "monitor.cli.app", "serve", "-c", str(path), "--port", str(port), *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "200"})


def test_kill_9_mid_run_then_restart(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Completed runs stay intact, the killed run becomes interrupted, the schedule resumes."""
    path = policy(tmp_path, tiny_model_dir, every="30s")
    store = Store(f"sqlite:///{tmp_path / 'fmn.db'}")
    first = _serve(path, _free_port(), "--run-now", "--stale-after", "2")
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            runs = store.runs()
            if any(r.status == "complete" for r in runs) and any(r.status == "running" for r in runs):
                break
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    before = {r.id: r.status for r in store.runs()}
    killed = [run_id for run_id, status in before.items() if status == "running"]
    assert killed and "complete" in before.values()
    second = _serve(path, _free_port(), "--stale-after", "2")
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            after = {r.id: r.status for r in store.runs()}
            resumed = [i for i in after if i not in before and after[i] == "complete"]
            if all(after[i] == "interrupted" for i in killed) and resumed:
                break
            time.sleep(0.5)
    finally:
        second.send_signal(signal.SIGTERM)
        second.communicate(timeout=60)
    after = {r.id: r.status for r in store.runs()}
    assert all(after[i] == "interrupted" for i in killed), after
    assert all(after[i] == "complete" for i, s in before.items() if s == "complete")
    assert [i for i in after if i not in before], "the schedule resumed after the restart"
    runs = store.runs(status="complete")
    per_slot = [(r.version, r.suite, int(r.started_at.timestamp() // 30)) for r in runs]
    assert len(per_slot) == len(set(per_slot)), "no slot was measured twice"


@pytest.mark.postgres
def _wait_for_slots(url: str, slots: int, timeout: float) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                names = conn.execute(text("SELECT name FROM claim WHERE name LIKE 'probe:%'")).scalars().all()
            if len({name.rsplit(":", 1)[1] for name in names}) >= slots:
                return
            time.sleep(1)
    finally:
        engine.dispose()


def test_two_serve_processes_on_one_postgres_database_work_each_slot_once(tmp_path: Path,
                                                                        tiny_model_dir: Path) -> None:
    from sqlalchemy import text

    from tests.conftest import postgres_database

    with postgres_database() as url:
        path = policy(tmp_path, tiny_model_dir, database=url, every="8s")
        Store(url).close()  # migrate once before both start
        replicas = [_serve(path, _free_port()) for _ in range(2)]
        try:
            _wait_for_slots(url, 2, timeout=150)  # two slots' firings, however loaded the machine is
            time.sleep(4)
        finally:
            for proc in replicas:
                proc.send_signal(signal.SIGTERM)
            outputs = [proc.communicate(timeout=60)[0] for proc in replicas]
        assert all(proc.returncode == 0 for proc in replicas), "\n---\n".join(o[-3000:] for o in outputs)
        assert not any("no running monitor" in o for o in outputs), "a replica ignored a shared job"
        store = Store(url)
        with store.engine.connect() as conn:
            claims = conn.execute(text("SELECT name, holder FROM claim")).all()
        slots = {name.rsplit(":", 1)[1] for name, _ in claims}
        assert len(slots) >= 2, claims
        for version in ("v1", "v2"):
            claimed = sum(name.startswith(f"probe:bot:{version}:") for name, _ in claims)
            for suite in ("arithmetic", "fluency"):
                measured = len(store.runs(version=version, suite=suite))
                assert claimed - 1 <= measured <= claimed, (version, suite, claimed, measured)
        assert store.runs(status="running") == []
        store.close()


def test_the_live_job_follows_a_rollback(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Once an action has made another version live, the live job probes that one."""
    monitor = open_monitor(policy(tmp_path, tiny_model_dir))
    monitor.store.set_live("bot", "v1", None)
    assert monitor.cycle("bot", "v2", slot=7)
    assert {r.version for r in monitor.store.runs()} == {"v1"}
    assert not monitor.cycle("bot", "v1", slot=7)  # the baseline job's slot is the same work


def test_a_stuck_endpoint_holds_up_its_own_model_only(tmp_path: Path) -> None:
    """The review found one monitor-wide lock: one stuck endpoint stopped every model. A run now
    holds only a slot of its own endpoint, so the other model's cycle runs while the stuck one
    waits, even on the same endpoint (it has `endpoint_runs` slots)."""
    import threading

    from monitor.policy.loading import load_config
    from monitor.probing.backends.fake import FakeBackend
    from monitor.service.scheduler import Monitor

    shutil.copytree(PROBES / "arithmetic", tmp_path / "probes" / "arithmetic")
    served = """    backend: {kind: openai, base_url: "http://127.0.0.1:9/v1", tokenizer: tok}
    versions: {v1: {served_name: a}, v2: {served_name: b}}
    baseline: v1
    live: v2
"""
    (tmp_path / "tok").mkdir()
    path = tmp_path / "forgetmenot.yaml"
    path.write_text(f"database: sqlite:///fmn.db\nmodels:\n  stuck:\n{served}  healthy:\n{served}"
                    "suites: [probes/arithmetic]\npolicy: {defaults: {min_items: 5}}\n")
    config = load_config(path)
    release = threading.Event()

    def load(_config: Any, model: str, _version: str) -> FakeBackend:
        # The stuck endpoint answers nothing until released (its deadline, in real life).
        return FakeBackend(fail_on=(lambda _text: not release.wait(60)) if model == "stuck" else None)

    monitor = Monitor(path, config, Store(config.database_url()), load_backend=load)
    stuck = threading.Thread(target=monitor.cycle, args=("stuck", "v2"), kwargs={"slot": 1})
    stuck.start()
    try:
        deadline = time.monotonic() + 30
        while not monitor.store.runs(status="running") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert monitor.cycle("healthy", "v2", slot=1)
        assert stuck.is_alive(), "the healthy model finished while the stuck one was still waiting"
        assert {r.status for r in monitor.store.runs(model="healthy")} == {"complete"}
    finally:
        release.set()
        stuck.join(timeout=60)
    assert {r.status for r in monitor.store.runs(model="stuck")} == {"complete"}


def test_a_quarantined_spool_file_is_shown_until_someone_deals_with_it(
        tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the spool could not put back is no longer retried, so it must not go unseen: the monitor
    says so for /readyz (`degraded`) and in a metric the alert rule watches, until it is dealt with."""
    monkeypatch.setenv("FORGETMENOT_HOME", str(tmp_path))
    monitor = open_monitor(policy(tmp_path, tiny_model_dir))
    monitor.spool.folder.mkdir(parents=True)
    (monitor.spool.folder / "run-bot-v2-x.json").write_text("not json")
    quarantined = "forgetmenot_spool_quarantined_files"
    assert monitor.degraded() == [] and monitor.registry.get_sample_value(quarantined) == 0
    monitor.replay_spool()
    [problem] = monitor.degraded()
    folder = monitor.spool.folder / "quarantine"
    assert problem.startswith(f"1 spool file quarantined in {folder}: run-bot-v2-x.json (unreadable")
    assert monitor.registry.get_sample_value(quarantined) == 1
    server = HttpServer(Api(monitor.config, monitor.store, monitor.registry, degraded=monitor.degraded),
                        port=0).start()
    try:
        status, ready = get(server.port, "/readyz")
    finally:
        server.stop()
    assert (status, ready) == (200, {"status": "ready", "degraded": [problem]}), "still serving, and says so"
    shutil.rmtree(folder)
    assert monitor.degraded() == [] and monitor.registry.get_sample_value(quarantined) == 0


def test_spool_replay_command_names_what_it_quarantined(tmp_path: Path, tiny_model_dir: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from monitor.cli.app import app

    monkeypatch.setenv("FORGETMENOT_HOME", str(tmp_path))
    path = policy(tmp_path, tiny_model_dir)
    (tmp_path / "spool").mkdir()
    (tmp_path / "spool" / "run-bot-v2-x.json").write_text("not json")
    result = CliRunner().invoke(app, ["spool", "replay", "-c", str(path)])
    quarantined = tmp_path / "spool" / "quarantine" / "run-bot-v2-x.json"
    assert result.exit_code == 1 and "quarantined" in result.output and quarantined.exists()
    assert str(quarantined) in result.output.replace("\n", "")  # rich may wrap a long path
