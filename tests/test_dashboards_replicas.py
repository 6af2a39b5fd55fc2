"""Two real `forgetmenot serve` replicas on one PostgreSQL database, scraped by a real Prometheus,
against one replica scraped by another: every dashboard query must return the same series with
the same numbers. Every replica exports the whole database's state, so a panel that sums across
replicas shows double, and one that keeps the replica's labels shows every row twice."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from monitor.actions.ladder import rollback
from monitor.metrics.dashboards import queries
from monitor.service.scheduler import open_monitor
from monitor.testing.stack import free_port, stack
from tests.test_dashboards import RULES, VALUES, _backends, _eventually, _policy

pytestmark = pytest.mark.postgres

# A range long enough to hold the whole test, so every increase is seen by both Prometheus servers.
WINDOW = {**VALUES, "__range": "10m", "__rate_interval": "10m"}
# The two Prometheus servers scrape at their own moments: a rate extrapolated over a few samples
# differs by a sample's share, far less than the doubling this test is about.
CLOSE = 0.25
Result = dict[frozenset[tuple[str, str]], float]


def _serve(policy: Path, port: int) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "monitor.cli.app", "serve", "-c", str(policy), "--port", str(port)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "200"}, cwd=policy.parent)


@contextmanager
def _replicas(policy: Path, count: int) -> Iterator[list[str]]:
    ports = [free_port() for _ in range(count)]
    processes = [_serve(policy, port) for port in ports]
    try:
        for port in ports:
            assert _eventually(lambda port=port: _answers(f"http://127.0.0.1:{port}/healthz"), 60)  # type: ignore[misc]
        yield [f"127.0.0.1:{port}" for port in ports]
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.communicate(timeout=60)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def _job(targets: list[str]) -> list[dict[str, Any]]:
    return [{"job_name": "forgetmenot", "static_configs": [{"targets": targets}]}]


def _query(prometheus: str, promql: str, at: float) -> Result:
    url = f"{prometheus}/api/v1/query?{urlencode({'query': promql, 'time': f'{at:.3f}'})}"
    with urllib.request.urlopen(url, timeout=10) as reply:
        body = json.loads(reply.read())
    assert body["status"] == "success", body
    found = body["data"]["result"]
    return {frozenset(series["metric"].items()): float(series["value"][1]) for series in found}


def _differences(one: Result, two: Result) -> list[str]:
    if one.keys() != two.keys():
        return [f"series {sorted(map(sorted, one))} against {sorted(map(sorted, two))}"]
    return [f"{dict(labels)}: {one[labels]} against {two[labels]}" for labels in one
            if not math.isclose(one[labels], two[labels], rel_tol=CLOSE)]


def _seed(policy: Path, tmp_path: Path, prometheus: list[str]) -> None:
    """What the dashboards' own test seeds: a FAIL with an alert and a retraining awaiting approval,
    an ERROR with probe errors (twice, so the error counter grows while scraped), a rollback."""
    monitor = open_monitor(policy, load_backend=_backends(tmp_path))
    monitor.cycle("bot", "v1", slot=1)
    monitor.cycle("helper", "v1", slot=1)
    zeros = 'forgetmenot_actions_total{model="helper", status="done"}'
    assert _eventually(lambda: _scraped_from_every_target(prometheus, zeros), 30), "never scraped at 0"
    monitor.cycle("bot", "v2", slot=1)
    monitor.cycle("helper", "v2", slot=1)
    errors = "forgetmenot_probe_errors_total"
    assert _eventually(lambda: _scraped_from_every_target(prometheus, errors), 30), "errors never scraped"
    monitor.cycle("helper", "v2", slot=2)
    moved = rollback(monitor.store, monitor.config, "helper", "v1", actor="sre")
    assert moved.status == "done", moved.detail
    monitor.store.close()


def _scraped_from_every_target(prometheus: list[str], series: str) -> bool:
    """Each Prometheus holds a few samples of `series` from each of its targets, so a change made
    now is an increase to all of them."""
    seen = f"count(count by (instance) (count_over_time({series}[1m]) >= 3))"
    counts = [(_query(p, seen, time.time()), _query(p, "count(up)", time.time())) for p in prometheus]
    return all(found and found == targets for found, targets in counts)


def test_two_replicas_show_the_same_numbers_as_one(tmp_path: Path, tiny_model_dir: Path) -> None:
    from tests.conftest import postgres_database

    with postgres_database() as url, ExitStack() as running:
        policy = _policy(tmp_path, tiny_model_dir)
        shared = policy.read_text().replace("sqlite:///fmn.db", url)
        policy.write_text(shared.replace("every: 1h", "every: 24h"))  # no replica probes by itself
        open_monitor(policy).store.close()  # migrate once, before the replicas start
        targets = running.enter_context(_replicas(policy, 2))
        (tmp_path / "one").mkdir()
        (tmp_path / "two").mkdir()
        one = running.enter_context(stack(tmp_path / "one", targets[0], RULES, jobs=_job(targets[:1])))
        two = running.enter_context(stack(tmp_path / "two", targets[0], RULES, jobs=_job(targets)))
        _seed(policy, tmp_path, [one.prometheus, two.prometheus])
        expressions = queries(**WINDOW)
        _eventually(lambda: not _empty(two.prometheus, expressions), 60)
        time.sleep(3)  # both have scraped the final state
        at = time.time()
        results = [(f"{name} {where}", _query(one.prometheus, expr, at), _query(two.prometheus, expr, at))
                   for name, where, expr in expressions]
    assert not [where for where, single, _ in results if not single and "duration" not in where]
    different = {where: found for where, single, pair in results if (found := _differences(single, pair))}
    assert not different, json.dumps(different, indent=1)


def _empty(prometheus: str, expressions: list[tuple[str, str, str]]) -> list[str]:
    """The queries that return nothing, but for the run durations: the replicas here make no run
    (the test's own monitor does), so they observe none."""
    now = time.time()
    awaited = [(where, expr) for _, where, expr in expressions if "duration" not in where]
    return [where for where, expr in awaited if not _query(prometheus, expr, now)]
