"""Alert rules: generated from one place, checked and unit-tested by the real promtool and amtool."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from monitor.metrics.rules import ALERTS, rule_tests_yaml, rules_yaml

ALERTS_DIR = Path(__file__).resolve().parent.parent / "alerts"
# A command as a runbook gives it: in backticks, or on an indented line of its own.
RUNBOOK_COMMAND = re.compile(r"(?:`|^ {4})forgetmenot ([a-z][a-z-]*)", re.MULTILINE)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run `make tools` "
                    "(Debian: prometheus, prometheus-alertmanager)")
    return path


def _run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, cwd=ALERTS_DIR, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_committed_rules_are_what_the_code_generates() -> None:
    assert (ALERTS_DIR / "forgetmenot.rules.yml").read_text() == rules_yaml(), "run: forgetmenot alerts"
    assert (ALERTS_DIR / "forgetmenot.rules.test.yml").read_text() == rule_tests_yaml()


def test_promtool_checks_the_rules() -> None:
    checked = _run(_tool("promtool"), "check", "rules", "forgetmenot.rules.yml")
    assert f"SUCCESS: {len(ALERTS)} rules found" in checked


def test_promtool_rule_tests_pass_including_alerts_that_must_not_fire() -> None:
    assert "SUCCESS" in _run(_tool("promtool"), "test", "rules", "forgetmenot.rules.test.yml")


def test_promtool_catches_a_wrong_expectation(tmp_path: Path) -> None:
    """The rule tests can fail: an ERROR verdict expected to page as forgetting must not pass."""
    cases = yaml.safe_load(rule_tests_yaml())
    case = next(c for c in cases["tests"][0]["alert_rule_test"]
                if c["alertname"] == "ForgetmenotRetentionBreach" and c["exp_alerts"])
    case["exp_alerts"][0]["exp_labels"]["capability"] = "arithmetic"
    shutil.copy(ALERTS_DIR / "forgetmenot.rules.yml", tmp_path)
    (tmp_path / "bad.test.yml").write_text(yaml.safe_dump(cases))
    done = subprocess.run([_tool("promtool"), "test", "rules", "bad.test.yml"], cwd=tmp_path,
                          capture_output=True, text=True, check=False)
    assert done.returncode != 0 and "FAILED" in done.stdout + done.stderr


def test_every_alert_is_annotated_and_has_a_runbook() -> None:
    rules = yaml.safe_load(rules_yaml())["groups"][0]["rules"]
    assert [r["alert"] for r in rules] == [a.name for a in ALERTS]
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"])
        assert (ALERTS_DIR.parent / rule["annotations"]["runbook_url"]).is_file()


def test_runbooks_name_commands_that_exist_and_never_judge_to_look() -> None:
    """On-call runs a runbook's commands as written: each must be a command, and looking must
    write nothing (`judge` stores verdicts; `verdicts` lists them)."""
    import typer.main

    from monitor.cli.app import app

    known = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    for runbook in sorted((ALERTS_DIR / "runbooks").glob("*.md")):
        named = set(RUNBOOK_COMMAND.findall(runbook.read_text()))
        assert named <= known, f"{runbook.name} names commands that do not exist: {named - known}"
        assert "judge" not in named, f"{runbook.name} tells on-call to judge (a write) in order to look"


def test_alertmanager_example_routes_critical_and_warning_differently() -> None:
    amtool = _tool("amtool")
    assert "SUCCESS" in _run(amtool, "check-config", "alertmanager.yml")
    routes = {sev: _run(amtool, "config", "routes", "test", "--config.file=alertmanager.yml",
                        f"severity={sev}").splitlines()[0] for sev in ("critical", "warning")}
    assert routes == {"critical": "pager", "warning": "chat"}


# -- replicas, and the mixin-style configuration ---------------------------------------------------

# Which alerts must fire in each setup: the monitor is down only with no replica up, and a replica
# is down only while another serves.
FIRING = {"one replica": {"ForgetmenotReplicaDown"},
          "two replicas up": {"ForgetmenotReplicaDown", "ForgetmenotMonitorDown"},
          "one of two replicas down": {"ForgetmenotMonitorDown"}}


def test_rule_tests_cover_every_rule_with_one_two_and_one_of_two_replicas() -> None:
    """Each setup has a case where each alert fires (once) and one where it must not."""
    groups = {group["name"]: group for group in yaml.safe_load(rule_tests_yaml())["tests"]}
    assert FIRING.keys() <= groups.keys()
    everything = {a.name for a in ALERTS}
    for setup, quiet_only in FIRING.items():
        cases = groups[setup]["alert_rule_test"]
        fired = {case["alertname"] for case in cases if case["exp_alerts"]}
        quiet = {case["alertname"] for case in cases if not case["exp_alerts"]}
        assert fired == everything - quiet_only and quiet == everything, setup
        assert all(len(case["exp_alerts"]) <= 1 for case in cases), setup
    assert groups["every replica down"]["alert_rule_test"][0]["exp_alerts"]


def test_a_rule_config_tunes_every_rule_as_a_mixin_config_does() -> None:
    from monitor.metrics.rules import RuleConfig

    config = RuleConfig(selector='job="fm"', by=("cluster", "namespace", "tenant"), labels={"team": "ml"},
                        annotations={"dashboard": "https://grafana.example.com/d/x"},
                        runbook_base="https://runbooks.example.com/forgetmenot/",
                        monitor_url="https://fm.example.com", for_={"ForgetmenotProbesErroring": "30m"},
                        disabled=frozenset({"ForgetmenotMonitorStale"}))
    rules = yaml.safe_load(rules_yaml(config))["groups"][0]["rules"]
    assert [r["alert"] for r in rules] == [a.name for a in ALERTS if a.name != "ForgetmenotMonitorStale"]
    for rule in rules:
        assert 'job="fm"' in rule["expr"] and 'job="forgetmenot"' not in rule["expr"]
        groupings = re.findall(r"\b(?:by|on) \(([^)]*)\)", rule["expr"])
        assert all(g.startswith("cluster, namespace, tenant") for g in groupings), rule["alert"]
        assert rule["labels"]["team"] == "ml" and rule["annotations"]["dashboard"]
        assert rule["annotations"]["runbook_url"].startswith("https://runbooks.example.com/forgetmenot/forgetmenot-")
        assert rule["annotations"]["monitor_url"].startswith("https://fm.example.com/")
        assert rule.get("for") != "0m", "for: 0m is Prometheus' default: left out"
    assert next(r for r in rules if r["alert"] == "ForgetmenotProbesErroring")["for"] == "30m"


def test_alerts_command_takes_a_config_file_and_flags(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from monitor.cli.app import app

    config = tmp_path / "rules.yaml"
    config.write_text(yaml.safe_dump({
        "selector": 'job="fm"', "additionalRuleLabels": {"team": "ml"}, "runbookUrl": "https://r.example.com/rb",
        "monitorUrl": "https://fm.example.com", "disabled": {"ForgetmenotMonitorStale": True},
        "customRules": {"ForgetmenotProbesErroring": {"for": "30m", "severity": "critical"}}}))
    out = tmp_path / "tuned" / "forgetmenot.rules.yml"
    done = CliRunner().invoke(app, ["alerts", "--out", str(out), "--chart", str(tmp_path / "no-chart"),
                                    "--rules-config", str(config), "--label", "tier=1",
                                    "--disable", "ForgetmenotSpoolQuarantined"])
    assert done.exit_code == 0, done.output
    rules = {r["alert"]: r for r in yaml.safe_load(out.read_text())["groups"][0]["rules"]}
    assert "ForgetmenotMonitorStale" not in rules and "ForgetmenotSpoolQuarantined" not in rules
    assert all(r["labels"]["team"] == "ml" and r["labels"]["tier"] == "1" for r in rules.values())
    assert rules["ForgetmenotProbesErroring"]["labels"]["severity"] == "critical"
    assert "SUCCESS" in _run_in(out.parent, _tool("promtool"), "test", "rules", "forgetmenot.rules.test.yml")


def test_alerts_command_names_an_alert_that_does_not_exist(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from monitor.cli.app import app

    done = CliRunner().invoke(app, ["alerts", "--out", str(tmp_path / "x.rules.yml"), "--disable",
                                    "ForgetmenotMonitorStal"])
    assert done.exit_code == 2 and "ForgetmenotMonitorStale" in done.output


def _run_in(folder: Path, *command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, cwd=folder, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr
