"""The chart's PrometheusRule, tuned the way kube-prometheus-stack users tune theirs (`defaultRules`
values), rendered for a release that is not named `forgetmenot`: every monitor_url is the rendered
Service's address, runbook links are absolute once a base is given, disabled alerts are absent,
extra labels and annotations are on every alert, and the result still passes promtool."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from monitor.metrics.rules import ALERTS
from tests.test_chart import CHART, EVERYTHING_ON, NAMESPACE, Values, find, load_values, one, resolve

RELEASE = "fm"
RUNBOOKS = "https://git.example.com/ml/forgetmenot/-/blob/main/alerts/runbooks"
TUNED: Values = {"defaultRules": {
    "runbookUrl": RUNBOOKS + "/",
    "disabled": {"ForgetmenotMonitorStale": True, "ForgetmenotSpoolQuarantined": False},
    "additionalRuleLabels": {"team": "ml-platform"},
    "additionalRuleAnnotations": {"dashboard": "https://grafana.example.com/d/forgetmenot-fleet"},
    "customRules": {"ForgetmenotProbesErroring": {"for": "30m", "severity": "critical"}},
}}


def render(overrides: Values | None = None) -> list[dict[str, Any]]:
    """The objects of `helm template fm helm/forgetmenot -n monitoring -f ci/openai-only.yaml`."""
    with helm_python.Chart.load(CHART) as chart:
        rendered = chart.render(load_values([EVERYTHING_ON], overrides), name=RELEASE, namespace=NAMESPACE)
    return [doc for path, text in sorted(rendered.items()) if path.endswith(".yaml")
            for doc in yaml.safe_load_all(text) if doc]


def rules(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups = one(objects, "PrometheusRule")["spec"]["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_monitor_links_are_the_rendered_services_address_for_any_release_name() -> None:
    objects = render({"ingress": {"enabled": False}})
    service = one(objects, "Service")
    port = service["spec"]["ports"][0]["port"]
    address = f"http://{service['metadata']['name']}.{NAMESPACE}.svc:{port}/"
    assert service["metadata"]["name"] == "fm-forgetmenot"
    links = {rule["alert"]: rule["annotations"]["monitor_url"] for rule in rules(objects)}
    assert links and all(url.startswith(address) for url in links.values()), links
    assert links["ForgetmenotMonitorDown"] == address


def test_monitor_links_follow_the_ingress_when_there_is_one() -> None:
    objects = render()
    links = [rule["annotations"]["monitor_url"] for rule in rules(objects)]
    assert {resolve(link, objects, "") for link in links} == {"Ingress fm-forgetmenot"}, links


def test_runbook_links_are_absolute_under_the_given_base() -> None:
    found = {rule["alert"]: rule["annotations"]["runbook_url"] for rule in rules(render(TUNED))}
    for alert in ALERTS:
        if alert.name in found:
            assert found[alert.name] == alert.runbook_url(RUNBOOKS)
            assert Path(alert.runbook_url("alerts/runbooks")).is_file()


def test_disabled_alerts_are_absent_and_the_others_carry_the_extra_labels_and_annotations() -> None:
    tuned = rules(render(TUNED))
    names = [rule["alert"] for rule in tuned]
    assert names == [a.name for a in ALERTS if a.name != "ForgetmenotMonitorStale"]
    for rule in tuned:
        assert rule["labels"]["team"] == "ml-platform" and rule["labels"]["severity"]
        assert rule["annotations"]["dashboard"].startswith("https://grafana.example.com/")
        assert {"summary", "description", "runbook_url", "monitor_url"} <= set(rule["annotations"])


def test_each_alert_takes_its_own_for_and_severity() -> None:
    erroring = next(rule for rule in rules(render(TUNED)) if rule["alert"] == "ForgetmenotProbesErroring")
    assert erroring["for"] == "30m" and erroring["labels"]["severity"] == "critical"
    shipped = {rule["alert"]: rule for rule in rules(render())}
    assert shipped["ForgetmenotProbesErroring"]["labels"]["severity"] == "warning"


def test_the_selector_follows_the_service_monitors_job_or_the_value() -> None:
    renamed = rules(render({"serviceMonitor": {"jobName": "fm-monitor"}}))
    exprs = [rule["expr"] for rule in renamed]
    assert all('job="fm-monitor"' in expr and 'job="forgetmenot"' not in expr for expr in exprs)
    chosen = rules(render({"defaultRules": {"selector": 'job="fm", namespace="ml"'}}))
    assert all('job="fm", namespace="ml"' in rule["expr"] for rule in chosen)


def test_extra_aggregation_labels_are_kept_through_every_aggregation() -> None:
    tuned = rules(render({"defaultRules": {"additionalAggregationLabels": ["tenant"]}}))
    clauses = [clause for rule in tuned for clause in re.findall(r"\b(?:by|on) \(([^)]*)\)", rule["expr"])]
    assert clauses and all(clause.startswith("cluster, namespace, tenant") for clause in clauses), clauses


def test_promtool_accepts_the_tuned_rules(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: run `make tools` (Debian: prometheus)")
    overrides = {"defaultRules": {**TUNED["defaultRules"], "additionalAggregationLabels": ["tenant"],
                                  "selector": 'job=~"fm|forgetmenot"'}}
    groups = one(render(overrides), "PrometheusRule")["spec"]["groups"]
    (tmp_path / "tuned.rules.yml").write_text(yaml.safe_dump({"groups": groups}))
    command = [promtool, "check", "rules", str(tmp_path / "tuned.rules.yml")]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_schema_knows_every_alert_by_name() -> None:
    values = json.loads((CHART / "values.schema.json").read_text())["properties"]
    schema = values["defaultRules"]["properties"]
    names = [alert.name for alert in ALERTS]
    assert list(schema["disabled"]["properties"]) == names == list(schema["customRules"]["properties"])


def test_every_alert_can_be_disabled() -> None:
    everything = {"defaultRules": {"disabled": {alert.name: True for alert in ALERTS}}}
    assert not find(render(everything), "PrometheusRule"), "an empty rule group is refused by Prometheus"


@pytest.mark.parametrize(("overrides", "message"), [
    ({"disabled": {"ForgetmenotMonitorStal": True}}, "/defaultRules/disabled"),
    ({"customRules": {"ForgetmenotProbesErroring": {"for": "ten minutes"}}}, "/defaultRules/customRules"),
    ({"customRules": {"ForgetmenotProbesErroring": {"severity": "page"}}}, "/defaultRules/customRules"),
    ({"runbookUrl": "alerts/runbooks"}, "/defaultRules/runbookUrl"),
    ({"additionalAggregationLabels": ["not a label"]}, "/defaultRules/additionalAggregationLabels"),
])
def test_wrong_rule_values_are_refused_naming_the_key(overrides: Values, message: str) -> None:
    with pytest.raises(helm_python.HelmError) as refused:
        render({"defaultRules": overrides})
    assert message in str(refused.value)
