"""`alerts`: the Prometheus alert rules and their promtool cases, tuned by a file or flags in the
words of the chart's `defaultRules` values (docs/serve.md, "Alert rules")."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from monitor.cli.context import CHART_FILES, console, reported

RULES = Path("alerts/forgetmenot.rules.yml")


def alerts(
    out: Annotated[Path, typer.Option(
        help="Where to write the rules; the promtool cases go beside them.")] = RULES,
    rules_config: Annotated[Path | None, typer.Option(
        help="A YAML file of the keys the chart's defaultRules takes (selector, additionalRuleLabels, "
             "disabled, customRules, runbookUrl, monitorUrl, ...); the flags below win over it.")] = None,
    selector: Annotated[str | None, typer.Option(
        help='PromQL matchers of the monitor\'s series, in every rule (default job="forgetmenot").')] = None,
    aggregation_label: Annotated[list[str] | None, typer.Option(
        help="A label every aggregation keeps besides cluster and namespace (repeat it).")] = None,
    label: Annotated[list[str] | None, typer.Option(
        help="KEY=VALUE added to every alert (repeat it).")] = None,
    annotation: Annotated[list[str] | None, typer.Option(
        help="KEY=VALUE added to every alert's annotations (repeat it).")] = None,
    for_: Annotated[list[str] | None, typer.Option(
        "--for", help="ALERT=DURATION: how long ALERT must hold before it fires (repeat it).")] = None,
    disable: Annotated[list[str] | None, typer.Option(help="An alert to leave out (repeat it).")] = None,
    runbook_base: Annotated[str | None, typer.Option(help="URL prefix of the runbooks.")] = None,
    monitor_url: Annotated[str | None, typer.Option(
        help="The monitor's URL as on-call reaches it: each alert's monitor_url annotation links to "
             "its page there.")] = None,
    chart: Annotated[Path, typer.Option(help="The Helm chart's files folder: its PrometheusRule's copy "
                                             "(the shipped defaults, which the chart's values tune) is "
                                             "written there too, where it exists.")] = CHART_FILES,
) -> None:
    """Write the Prometheus alert rules generated from the metric names, and their promtool cases."""
    flags = _flags(selector, aggregation_label, label, annotation, for_, disable, runbook_base, monitor_url)
    with reported():
        config = _config(rules_config, flags)
    written = [*_write_rules(out, config), *_write_chart_copy(chart)]
    console.print("wrote " + ", ".join(str(p) for p in written))


def _flags(selector: str | None, aggregation_labels: list[str] | None, labels: list[str] | None,
           annotations: list[str] | None, held: list[str] | None, disabled: list[str] | None,
           runbook_base: str | None, monitor_url: str | None) -> dict[str, Any]:
    """The flags given, in the config file's words."""
    given: dict[str, Any] = {
        "selector": selector, "runbookUrl": runbook_base, "monitorUrl": monitor_url,
        "additionalAggregationLabels": aggregation_labels or None,
        "additionalRuleLabels": _pairs(labels, "--label") or None,
        "additionalRuleAnnotations": _pairs(annotations, "--annotation") or None,
        "disabled": dict.fromkeys(disabled or [], True) or None,
        "customRules": {name: {"for": value} for name, value in _pairs(held, "--for").items()} or None,
    }
    return {key: value for key, value in given.items() if value is not None}


def _pairs(given: list[str] | None, flag: str) -> dict[str, str]:
    found = {}
    for pair in given or []:
        key, equals, value = pair.partition("=")
        if not (key and equals):
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint=flag)
        found[key] = value
    return found


def _config(path: Path | None, flags: dict[str, Any]) -> Any:
    from monitor.metrics.rule_config import merged, read_file, rule_config

    from_file = read_file(path) if path is not None else {}
    source = f"{path} and the flags" if path is not None else "the flags"
    return rule_config(merged(from_file, flags), source)


def _write_rules(out: Path, config: Any) -> list[Path]:
    """The rules, and promtool cases that match them where the selector lets series be written."""
    from monitor.metrics.rules import rule_tests_yaml, rules_yaml

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(rules_yaml(config))
    cases = out.with_name(out.name.replace(".yml", ".test.yml"))
    try:
        cases.write_text(rule_tests_yaml(config, out.name))
    except ValueError as exc:  # a regular-expression selector names no series to write
        console.print(f"no promtool cases written: {exc}", highlight=False)
        return [out]
    untested = sorted(config.for_)
    if untested:
        left_out = ", ".join(untested)
        console.print(f"promtool cases leave out {left_out}: their `for` is yours", highlight=False)
    return [out, cases]


def _write_chart_copy(chart: Path) -> list[Path]:
    """Helm reads no file outside its chart: the chart carries the shipped rules, which its
    `defaultRules` values tune at install."""
    from monitor.metrics.rules import rules_yaml

    if not chart.is_dir():
        return []
    (chart / RULES.name).write_text(rules_yaml())
    return [chart / RULES.name]
