"""A `RuleConfig` from a small YAML file and the `alerts` command's flags, in the words of the Helm
chart's `defaultRules` values (kube-prometheus-stack's): one vocabulary whether the rules are
written by `forgetmenot alerts` or rendered by the chart.

    selector: 'job="forgetmenot"'             # the monitor's series, in every rule
    additionalAggregationLabels: [tenant]     # kept besides cluster and namespace
    additionalRuleLabels: {team: ml-platform}
    additionalRuleAnnotations: {dashboard: https://grafana.example.com/d/forgetmenot-fleet}
    runbookUrl: https://git.example.com/ml/forgetmenot/-/blob/main/alerts/runbooks
    monitorUrl: https://forgetmenot.example.com
    disabled: {ForgetmenotMonitorStale: true}
    customRules: {ForgetmenotProbesErroring: {for: 30m, severity: critical}}
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from monitor.errors import Refused
from monitor.metrics.rules import ALERTS, DEFAULT, RuleConfig

LABEL = r"^[a-zA-Z_][a-zA-Z0-9_]*$"
DURATION = r"^([0-9]+(ms|s|m|h|d|w|y))+$"


def _alert(name: str) -> str:
    known = [alert.name for alert in ALERTS]
    if name in known:
        return name
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise ValueError(f"no alert {name!r}{hint}; the alerts are {', '.join(known)}")


def _no_severity(labels: dict[str, str]) -> dict[str, str]:
    if "severity" in labels:
        raise ValueError("severity is each alert's own: set it per alert in customRules")
    return labels


AlertName = Annotated[str, AfterValidator(_alert)]
LabelName = Annotated[str, Field(pattern=LABEL)]


class CustomRule(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    for_: str | None = Field(None, alias="for", pattern=DURATION)
    severity: Literal["critical", "warning", "info"] | None = None


class RulesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    selector: str = Field(DEFAULT.selector, min_length=1)
    additionalAggregationLabels: list[LabelName] = []
    additionalRuleLabels: Annotated[dict[LabelName, str], AfterValidator(_no_severity)] = {}
    additionalRuleAnnotations: dict[LabelName, str] = {}
    runbookUrl: str = Field(DEFAULT.runbook_base, min_length=1)
    monitorUrl: str = Field(DEFAULT.monitor_url, pattern=r"^https?://")
    disabled: dict[AlertName, bool] = {}
    customRules: dict[AlertName, CustomRule] = {}

    def config(self) -> RuleConfig:
        held = {name: rule.for_ for name, rule in self.customRules.items() if rule.for_}
        severity = {name: rule.severity for name, rule in self.customRules.items() if rule.severity}
        disabled = frozenset(name for name, off in self.disabled.items() if off)
        return RuleConfig(self.selector, (*DEFAULT.by, *self.additionalAggregationLabels),
                          self.additionalRuleLabels, self.additionalRuleAnnotations, self.runbookUrl,
                          self.monitorUrl, held, severity, disabled)


def merged(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` over `base`, maps merged key by key, as Helm layers values."""
    found = dict(base)
    for key, value in override.items():
        both_maps = isinstance(value, Mapping) and isinstance(found.get(key), Mapping)
        found[key] = merged(found[key], value) if both_maps else value
    return found


def read_file(path: Path) -> dict[str, Any]:
    try:
        found = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise Refused(f"{path}: cannot be read as YAML: {exc}") from None
    if not isinstance(found, dict):
        raise Refused(f"{path}: must be a map of the keys defaultRules takes")
    return found


def rule_config(values: Mapping[str, Any], source: str) -> RuleConfig:
    """The config these values say, or one error naming each wrong key."""
    try:
        return RulesFile.model_validate(values).config()
    except ValidationError as exc:
        problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}"
                    for e in exc.errors()]
        raise Refused(f"{source}: " + "; ".join(problems)) from None
