"""The shipped alert rules, evaluated by the real promtool over series written here by hand (not by
the generator that writes the rules' own promtool cases): every replica of `forgetmenot serve`
on one database exports the same state series, so an alert must fire once whether one, two or
one of two replicas are scraped, and "the monitor is down" only when no replica is up."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

RULES = Path(__file__).resolve().parent.parent / "alerts" / "forgetmenot.rules.yml"
FIRING = 'count by (alertname) (ALERTS{alertstate="firing"})'
BOT = {"model": "bot", "version": "v2", "baseline": "v1"}
PHASES = ("PASS", "MARGINAL", "FAIL", "INCONCLUSIVE", "ERROR")
Series = dict[str, str]


def _name(metric: str, labels: dict[str, str]) -> str:
    return metric + "{" + ",".join(f'{key}="{value}"' for key, value in labels.items()) + "}"


def _target(replica: int, **extra: str) -> dict[str, str]:
    return {"job": "forgetmenot", "instance": f"monitor-{replica}:9464", **extra}


def _verdict(target: dict[str, str], capability: str, phase: str, values: str, critical: bool = False,
             diagnosis: str = "alignment_loss") -> Series:
    labels = {**target, **BOT, "capability": capability}
    zeros = values.replace("1x", "0x")
    series = {_name("forgetmenot_verdict_phase", {**labels, "phase": p}): values if p == phase else zeros
              for p in PHASES}
    info = {**labels, "diagnosis": diagnosis, "critical": str(critical).lower(), "muted": "false"}
    return series | {_name("forgetmenot_verdict_info", info): values}


def _monitor(target: dict[str, str], down_at: int | None = None) -> Series:
    """What one replica exports while it is scraped: its schedule and a suite never run since 0.
    A replica that goes down at `down_at` exports nothing more (its series go stale)."""
    stale = {**target, **BOT, "suite": "refusal", "capability": "refusal"}
    del stale["baseline"]
    up = "1x60" if down_at is None else f"1x{down_at} 0x{60 - down_at}"
    until = "x60" if down_at is None else f"x{down_at} stale"
    return {_name("up", target): up, _name("forgetmenot_schedule_interval_seconds", target): f"600{until}",
            _name("forgetmenot_last_successful_run_timestamp_seconds", stale): f"0{until}"}


def _firing(tmp_path: Path, series: Series, at: str, expected: dict[str, int],
            query: str = FIRING, label: str = "alertname") -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: run `make tools` (Debian: prometheus)")
    samples = [{"labels": f'{{{label}="{name}"}}', "value": count} for name, count in expected.items()]
    cases = {"rule_files": [RULES.name], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": [{"series": s, "values": v} for s, v in series.items()],
        "promql_expr_test": [{"expr": query, "eval_time": at, "exp_samples": samples}]}]}
    shutil.copy(RULES, tmp_path / RULES.name)
    (tmp_path / "cases.yml").write_text(yaml.safe_dump(cases, sort_keys=False))
    return subprocess.run([promtool, "test", "rules", "cases.yml"], cwd=tmp_path, capture_output=True,
                          text=True, check=False)


def _passes(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, done.stdout + done.stderr


def test_stale_fires_once_with_one_replica(tmp_path: Path) -> None:
    _passes(_firing(tmp_path, _monitor(_target(0)), "40m", {"ForgetmenotMonitorStale": 1}))


def test_stale_fires_once_with_two_replicas_up(tmp_path: Path) -> None:
    series = _monitor(_target(0)) | _monitor(_target(1))
    _passes(_firing(tmp_path, series, "40m", {"ForgetmenotMonitorStale": 1}))


def test_one_of_two_replicas_down_is_no_monitor_down_and_breaches_still_fire(tmp_path: Path) -> None:
    """The other replica watches every model: a warning about the replica, never the critical page."""
    up, down = _target(0), _target(1)
    series = (_monitor(up) | _monitor(down, down_at=10) | _verdict(up, "general-knowledge", "FAIL", "1x60")
              | _verdict(down, "general-knowledge", "FAIL", "1x10 stale"))
    _passes(_firing(tmp_path, series, "30m", {"ForgetmenotRetentionBreach": 1,
                                              "ForgetmenotReplicaDown": 1}))


def test_every_replica_down_is_one_monitor_down(tmp_path: Path) -> None:
    series = _monitor(_target(0), down_at=10) | _monitor(_target(1), down_at=10)
    _passes(_firing(tmp_path, series, "30m", {"ForgetmenotMonitorDown": 1}))


def test_no_target_at_all_is_monitor_down(tmp_path: Path) -> None:
    series = {_name("up", {"job": "something-else", "instance": "x:1"}): "1x60"}
    _passes(_firing(tmp_path, series, "10m", {"ForgetmenotMonitorDown": 1}))


def test_two_replicas_raise_each_alert_once(tmp_path: Path) -> None:
    series: Series = {}
    for replica in (0, 1):
        target = _target(replica)
        series |= _monitor(target) | _verdict(target, "general-knowledge", "FAIL", "1x60")
        series |= _verdict(target, "refusal", "FAIL", "1x60", critical=True, diagnosis="knowledge_loss")
        series |= _verdict(target, "arithmetic", "ERROR", "1x60", diagnosis="none")
        runs = {**target, **BOT, "suite": "arithmetic", "capability": "arithmetic", "status": "error"}
        del runs["baseline"]
        series[_name("forgetmenot_runs_total", runs)] = "0+1x60"
        actions = {**target, "model": "bot", "kind": "retrain", "status": "rejected"}
        series[_name("forgetmenot_actions_total", actions)] = "0x3 1x56"
    _passes(_firing(tmp_path, series, "40m", {
        "ForgetmenotRetentionBreach": 1, "ForgetmenotCriticalCapabilityBreach": 1,
        "ForgetmenotProbesErroring": 1, "ForgetmenotActionNeedsHuman": 1, "ForgetmenotMonitorStale": 1}))


def test_replicas_that_disagree_for_a_scrape_still_raise_one_breach(tmp_path: Path) -> None:
    """While one replica renders a newer verdict, the two export different diagnoses for a moment:
    the breach must still be one alert, never a failed evaluation."""
    series = (_monitor(_target(0)) | _monitor(_target(1))
              | _verdict(_target(0), "general-knowledge", "FAIL", "1x60", diagnosis="alignment_loss")
              | _verdict(_target(1), "general-knowledge", "FAIL", "1x60", diagnosis="knowledge_loss"))
    _passes(_firing(tmp_path, series, "5m", {"ForgetmenotRetentionBreach": 1}))


def test_alerts_keep_the_namespace_and_cluster_for_routing(tmp_path: Path) -> None:
    """Two monitors in two namespaces: each breach and each outage is routed to its tenant."""
    team_a = _target(0, namespace="team-a", cluster="eu")
    team_b = _target(1, namespace="team-b", cluster="eu")
    breach = _verdict(team_a, "general-knowledge", "FAIL", "1x60")
    series = _monitor(team_a) | _monitor(team_b, down_at=10) | breach
    query = 'count by (namespace) (ALERTS{alertstate="firing", alertname=~".*Breach|.*MonitorDown"})'
    _passes(_firing(tmp_path, series, "30m", {"team-a": 1, "team-b": 1}, query, "namespace"))
