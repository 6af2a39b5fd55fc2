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
    assert "SUCCESS: 7 rules found" in _run(_tool("promtool"), "check", "rules", "forgetmenot.rules.yml")


def test_promtool_rule_tests_pass_including_alerts_that_must_not_fire() -> None:
    assert "SUCCESS" in _run(_tool("promtool"), "test", "rules", "forgetmenot.rules.test.yml")


def test_promtool_catches_a_wrong_expectation(tmp_path: Path) -> None:
    """The rule tests can fail: an ERROR verdict expected to page as forgetting must not pass."""
    cases = yaml.safe_load(rule_tests_yaml())
    case = next(c for c in cases["tests"][0]["alert_rule_test"]
                if c["alertname"] == "ForgetmenotRetentionBreach")
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
