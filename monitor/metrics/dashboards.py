"""Grafana dashboards as code: the fleet overview and one model's drill-down, built with
grafana-foundation-sdk from the metric names, written to `dashboards/` by `forgetmenot dashboards
write`. A test fails if the committed JSON differs from what this module generates, as for the
alert rules, and another runs every panel's query in a real Prometheus.

The fleet board answers an SRE's question at a glance: is any live model forgetting, since when,
how badly, and what was done about it. The drill-down shows one model's version over time, and
links to the monitor's own pages (`<monitor_url>/models/<model>`), whose address is the
`monitor_url` variable because only the person installing Grafana knows it (the Helm chart fills
in its own). Both start, after the data source, with the `cluster`, `namespace` and `job`
variables, as kubernetes-mixin's do, and every query is narrowed by them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monitor.metrics import charts
from monitor.metrics import names as m
from monitor.metrics.names import MONITOR_URL
from monitor.metrics.panels import (
    Chart,
    Link,
    Query,
    Scope,
    datasource,
    once,
    render,
    require_sdk,
    sel,
    worst_phase,
)

FLEET_UID = "forgetmenot-fleet"
MODEL_UID = "forgetmenot-model"
TAGS = ["forgetmenot"]
FLEET: Scope = {"model": '=~"$model"'}
MODEL: Scope = {"model": '="$model"', "version": '="$version"', "capability": '=~"$capability"'}
Section = tuple[str, list[Chart]]
SERIES = "{{version}} {{suite}} {{kind}}"


# -- the fleet overview ------------------------------------------------------------------------

def _worst_per_model() -> Chart:
    links = (Link("Drill down into ${__field.labels.model}",
                  f"/d/{MODEL_UID}/?var-model=${{__field.labels.model}}&${{__url_time_range}}"),
             Link("Verdicts of ${__field.labels.model} in forgetmenot",
                  "${monitor_url}/models/${__field.labels.model}"))
    return Chart("stat", "Worst phase per model",
                 "Is any live model forgetting? The worst phase among each model's newest verdicts "
                 "(muted capabilities left out, as the monitor and the alerts leave them out).",
                 (Query(worst_phase("model", FLEET, counted_only=True), "{{model}}", instant=True),),
                 phases=True, links=links, width=8, height=7)


def _live_pointer() -> Chart:
    return Chart("table", "Live version, where an action moved it",
                 "Which version serves now after a rollback or a promoted retraining? The registry's "
                 "live pointer per model (absent until an action has moved live).",
                 (Query(f"{once(m.LIVE_VERSION, FLEET)} == 1", instant=True),))


def fleet_sections() -> list[Section]:
    legend = "{{model}} {{version}} {{capability}}"
    to_model = (Link("Verdicts of ${__field.labels.model} in forgetmenot",
                     "${monitor_url}/models/${__field.labels.model}"),)
    return [
        ("Now: is any live model forgetting?", [
            _worst_per_model(), charts.failing_since(FLEET), charts.past_tolerance(FLEET)]),
        ("Since when, and how badly", [
            charts.phase_timeline(FLEET, "model, capability", "{{model}} {{capability}}", to_model),
            charts.delta_band(FLEET, f"{legend} {{{{kind}}}}", accuracy=True),
            charts.delta_band(FLEET, f"{legend} {{{{kind}}}}", accuracy=False),
            charts.knowledge(FLEET, legend), charts.alignment(FLEET, legend),
            charts.safety_depth(FLEET, "{{model}} {{version}} {{suite}}")]),
        ("What was done about it", [charts.actions(FLEET, "model, kind, status"), _live_pointer()]),
        ("The monitor itself", [
            charts.freshness(FLEET, "{{model}} {{version}} {{suite}}"), charts.probe_errors(FLEET),
            charts.run_duration(FLEET)]),
    ]


# -- one model's drill-down ----------------------------------------------------------------------

def _phase_now() -> Chart:
    return Chart("stat", "Phase per capability",
                 "Which capabilities of this version are forgetting now? The newest verdict's phase per "
                 "capability, by name and colour.",
                 (Query(worst_phase("capability", MODEL), "{{capability}}", instant=True),),
                 phases=True, links=(_verdict_link(), *_model_links()), width=8, height=7)


def _verdict_link() -> Link:
    """The newest verdict's own page: the monitor looks it up, since its id is no label."""
    return Link("The ${__field.labels.capability} verdict in forgetmenot",
                "${monitor_url}/verdicts/latest?model=${model}&version=${version}"
                "&capability=${__field.labels.capability}")


def _diagnosis() -> Chart:
    expr = f"max by (capability, diagnosis, critical, muted) ({sel(m.VERDICT_INFO, MODEL)})"
    return Chart("table", "Diagnosis per capability",
                 "Did it forget the knowledge or only stop using it? The newest verdict's diagnosis "
                 "(knowledge_loss: roll back; alignment_loss: retrain), and whether the capability is "
                 "critical or muted in the policy.", (Query(expr, instant=True),), width=8, height=7)


def _scores(accuracy: bool) -> Chart:
    query = Query(once(m.RETENTION_SCORE, MODEL, charts.kinds(accuracy)), "{{suite}} {{kind}}")
    if accuracy:
        return Chart("timeseries", "Accuracy history per suite and kind",
                     "How has this version scored over time? The accuracy of each newest complete run "
                     "(multiple_choice, generate_until), per suite and kind.", (query,), unit="percentunit")
    return Chart("timeseries", "Fluency history per suite (nats per token)",
                 "How fluent has this version been over time? The log-likelihood per token of each newest "
                 "complete run (loglikelihood_rolling), per suite.", (query,), unit=charts.NATS)


def _baseline_against_live(accuracy: bool) -> Chart:
    """The baseline is named by the newest verdicts; live is the registry's pointer where an action
    moved it, else the version the monitor judges (the policy's live)."""
    scope = {"model": '="$model"', "capability": '=~"$capability"'}
    score, judged = once(m.RETENTION_SCORE, scope, charts.kinds(accuracy)), sel(m.VERDICT_TIMESTAMP, scope)
    baseline = f'label_replace(max by (model, baseline) ({judged}), "version", "$1", "baseline", "(.+)")'
    live = f"{sel(m.LIVE_VERSION, scope)} or on (model) max by (model, version) ({judged})"
    queries = (Query(f"{score}\nand on (model, version) {baseline}", f"baseline {SERIES}"),
               Query(f"{score}\nand on (model, version) ({live})", f"live {SERIES}"))
    what = "accuracy" if accuracy else "log-likelihood per token"
    return Chart("timeseries", f"Baseline against live, {what}",
                 f"Does live still score what the baseline scored? Each suite and kind's {what} for the "
                 "baseline version and for the live one.", queries,
                 unit="percentunit" if accuracy else charts.NATS)


def _model_links() -> tuple[Link, ...]:
    return (Link("${model} in forgetmenot", "${monitor_url}/models/${model}"),
            Link("forgetmenot overview", "${monitor_url}/"))


def model_sections() -> list[Section]:
    return [
        ("Now", [_phase_now(), charts.failing_since(MODEL), _diagnosis()]),
        ("History", [
            _scores(accuracy=True), _scores(accuracy=False),
            _baseline_against_live(accuracy=True), _baseline_against_live(accuracy=False),
            charts.phase_timeline(MODEL, "capability", "{{capability}}", _model_links()),
            charts.delta_band(MODEL, "{{capability}} {{kind}}", accuracy=True),
            charts.delta_band(MODEL, "{{capability}} {{kind}}", accuracy=False),
            charts.knowledge(MODEL, "{{capability}}"), charts.alignment(MODEL, "{{capability}}"),
            charts.safety_depth(MODEL, "{{suite}}")]),
        ("Actions and the monitor", [
            charts.freshness(MODEL, "{{suite}}"), charts.probe_errors(MODEL), charts.run_duration(MODEL),
            charts.actions(MODEL, "kind, status")]),
    ]


# -- variables, links, annotations, and the dashboards whole -----------------------------------

# Every series of the chosen cluster, namespace and job: what the later variables list from.
TARGETS = 'cluster=~"$cluster", namespace=~"$namespace", job=~"$job"'


def _variables(per_model: bool) -> list[Any]:
    """The Prometheus to query; the cluster, namespace and job, in kubernetes-mixin's order; the
    models (the fleet), or the model, version and capabilities (the drill-down) to show, each
    listed from the series the monitor exports; the monitor's address for links."""
    from grafana_foundation_sdk.builders.dashboard import DatasourceVariable, TextBoxVariable

    source = DatasourceVariable("datasource").label("Prometheus").type("prometheus")
    shown = _drill_down_variables() if per_model else [_every(_listed("model", m.RETENTION_SCORE, TARGETS))]
    address = (TextBoxVariable("monitor_url").label("forgetmenot address").default_value(MONITOR_URL)
               .description("Where the monitor's pages are served (forgetmenot serve), for the links."))
    return [source, *_target_variables(), *shown, address]


def _listed(name: str, spec: m.MetricSpec, matchers: str) -> Any:
    from grafana_foundation_sdk.builders.dashboard import QueryVariable
    from grafana_foundation_sdk.models.dashboard import VariableRefresh, VariableSort

    series = f"{spec.full_name}{{{matchers}}}" if matchers else spec.full_name
    return (QueryVariable(name).label(name).datasource(datasource())
            .query(f"label_values({series}, {name})")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.ALPHABETICAL_ASC))


def _every(variable: Any) -> Any:
    """Several values or All, which matches every value, and a series without the label too."""
    return variable.multi(True).include_all(True).all_value(".*")


def _target_variables() -> list[Any]:
    """Listed from forgetmenot_build_info, which every replica exports whatever it has measured."""
    cluster = _listed("cluster", m.BUILD_INFO, "")
    namespace = _listed("namespace", m.BUILD_INFO, 'cluster=~"$cluster"')
    job = _listed("job", m.BUILD_INFO, 'cluster=~"$cluster", namespace=~"$namespace"')
    return [_every(cluster), _every(namespace), _every(job)]


def _drill_down_variables() -> list[Any]:
    capability = _listed("capability", m.RETENTION_SCORE, f'{TARGETS}, model="$model", version="$version"')
    return [_listed("model", m.RETENTION_SCORE, TARGETS),
            _listed("version", m.RETENTION_SCORE, f'{TARGETS}, model="$model"'), _every(capability)]


def _actions_annotation(scope: Scope) -> Any:
    from grafana_foundation_sdk.builders.dashboard import AnnotationQuery

    acted = once(m.ACTIONS, scope, fn="increase", window="$__rate_interval")
    expr = f"sum by (model, kind, status) ({acted}) > 0"
    return (AnnotationQuery().name("forgetmenot actions").datasource(datasource()).enable(True)
            .icon_color("orange").expr(expr))


ANNOTATION_FORMAT = {"titleFormat": "{{kind}} of {{model}}: {{status}}", "tagKeys": "model,kind,status",
                     "textFormat": "forgetmenot actions --model {{model}}", "useValueForTime": False}
"""Fields of a Prometheus annotation that the SDK's AnnotationQuery has no setter for."""


def _dashboard(uid: str, title: str, description: str, sections: list[Section], per_model: bool,
               links: list[Link]) -> dict[str, Any]:
    from grafana_foundation_sdk.builders.dashboard import Dashboard, DashboardLink, Row
    from grafana_foundation_sdk.cog.encoder import JSONEncoder

    board = (Dashboard(title).uid(uid).description(description).tags(TAGS).time("now-7d", "now")
             .refresh("1m").timezone("browser").variables(_variables(per_model))
             .annotation(_actions_annotation(MODEL if per_model else FLEET))
             .links([DashboardLink(link.title).url(link.url).keep_time(True) for link in links]))
    panel_id = 0
    for title_of_row, section in sections:
        panel_id += 1
        board = board.with_row(Row(title_of_row).id(panel_id))
        for chart in section:
            panel_id += 1
            board = board.with_panel(render(chart, panel_id))
    document: dict[str, Any] = json.loads(JSONEncoder().encode(board.build()))
    for annotation in document["annotations"]["list"]:
        annotation.update(ANNOTATION_FORMAT)
    return document


def fleet() -> dict[str, Any]:
    return _dashboard(FLEET_UID, "forgetmenot / fleet",
                      "Is any live model forgetting, since when, how badly, and what was done about it.",
                      fleet_sections(), per_model=False,
                      links=[Link("Model drill-down", f"/d/{MODEL_UID}"),
                             Link("forgetmenot", "${monitor_url}/")])


def model() -> dict[str, Any]:
    return _dashboard(MODEL_UID, "forgetmenot / model",
                      "One model's version over time: scores, verdicts against the baseline, the "
                      "diagnosis, and the actions taken.", model_sections(), per_model=True,
                      links=[Link("Fleet overview", f"/d/{FLEET_UID}"),
                             Link("${model} in forgetmenot", "${monitor_url}/models/${model}")])


def build_all() -> dict[str, dict[str, Any]]:
    """File name → dashboard JSON, as Grafana's file provisioning and its HTTP API take it."""
    require_sdk()
    return {"fleet.json": fleet(), "model.json": model()}


GRAFANA_VALUES = {"__rate_interval": "1m", "__interval": "30s", "__range": "6h", "monitor_url": MONITOR_URL,
                  "cluster": ".*", "namespace": ".*", "job": ".*"}
"""What Grafana puts in for its own variables and the scrape's (All), for running the queries without it."""
FLEET_VALUES = {"model": ".*"}
"""The fleet's model variable: every model, as the fleet opens."""


def queries(fleet: Mapping[str, str] = FLEET_VALUES, **values: str) -> list[tuple[str, str, str]]:
    """(dashboard file, panel or annotation, PromQL with the variables filled in as Grafana would)
    for every query the dashboards make: what the tests and the benchmark run in Prometheus.
    `values` are the template variables' values (model, version, capability, and the scrape's
    cluster, namespace and job); `fleet` the fleet's own (its models)."""
    found = []
    for name, doc in build_all().items():
        filled = {**GRAFANA_VALUES, **values, **(fleet if doc["uid"] == FLEET_UID else {})}
        panels = [p for p in doc["panels"] if p["type"] != "row"]
        found += [(name, p["title"], _fill(t["expr"], filled)) for p in panels for t in p["targets"]]
        found += [(name, a["name"], _fill(a["expr"], filled)) for a in doc["annotations"]["list"]]
    return found


def _fill(expr: str, values: Mapping[str, str]) -> str:
    """`$1` (a label_replace group) is no variable and stays."""
    return re.sub(r"\$\{?(\w+)\}?", lambda found: values.get(found.group(1), found.group(0)), expr)


def render_json(dashboard: dict[str, Any]) -> str:
    """One dashboard as committed: sorted keys, indent 2, a trailing newline; the same every time."""
    return json.dumps(dashboard, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def write(folder: Path) -> list[Path]:
    """Write every dashboard into `folder`; returns the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, dashboard in build_all().items():
        (folder / name).write_text(render_json(dashboard))
        written.append(folder / name)
    return written
