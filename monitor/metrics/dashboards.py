"""Grafana dashboards as code: the fleet overview and one model's drill-down, built with
grafana-foundation-sdk from the metric names, written to `dashboards/` by `forgetmenot dashboards
write`. A test fails if the committed JSON differs from what this module generates, as for the
alert rules, and another runs every panel's query in a real Prometheus.

The fleet board answers an SRE's question at a glance: is any live model forgetting, since when,
how badly, and what was done about it. The drill-down shows one model's version over time, and
links to the monitor's own pages (`<monitor_url>/models/<model>`), whose address is the
`monitor_url` variable because only the person installing Grafana knows it.
"""

from __future__ import annotations

import json
import re
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
    render,
    require_sdk,
    sel,
    worst_phase,
)

FLEET_UID = "forgetmenot-fleet"
MODEL_UID = "forgetmenot-model"
TAGS = ["forgetmenot"]
FLEET: Scope = {}
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
                 (Query(worst_phase("model", counted_only=True), "{{model}}", instant=True),),
                 phases=True, links=links, width=8, height=7)


def _live_pointer() -> Chart:
    return Chart("table", "Live version, where an action moved it",
                 "Which version serves now after a rollback or a promoted retraining? The registry's "
                 "live pointer per model (absent until an action has moved live).",
                 (Query(f"{sel(m.LIVE_VERSION)} == 1", instant=True),))


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
            charts.knowledge(FLEET, legend), charts.alignment(FLEET, legend)]),
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


def _scores() -> Chart:
    return Chart("timeseries", "Score history per suite and kind",
                 "How has this version scored over time? The mean score of each newest complete run, "
                 "per suite and kind (accuracy, or log-likelihood per token).",
                 (Query(sel(m.RETENTION_SCORE, MODEL), "{{suite}} {{kind}}"),))


def _baseline_against_live() -> Chart:
    """The baseline is named by the newest verdicts; live is the registry's pointer where an action
    moved it, else the version the monitor judges (the policy's live)."""
    scope = {"model": '="$model"', "capability": '=~"$capability"'}
    score, judged = sel(m.RETENTION_SCORE, scope), sel(m.VERDICT_TIMESTAMP, scope)
    baseline = f'label_replace(max by (model, baseline) ({judged}), "version", "$1", "baseline", "(.+)")'
    live = f"{sel(m.LIVE_VERSION, scope)} or on (model) max by (model, version) ({judged})"
    return Chart("timeseries", "Baseline against live",
                 "Does live still score what the baseline scored? Each suite and kind's score for the "
                 "baseline version and for the live one.",
                 (Query(f"{score}\nand on (model, version) {baseline}", f"baseline {SERIES}"),
                  Query(f"{score}\nand on (model, version) ({live})", f"live {SERIES}")))


def _model_links() -> tuple[Link, ...]:
    return (Link("${model} in forgetmenot", "${monitor_url}/models/${model}"),
            Link("forgetmenot overview", "${monitor_url}/"))


def model_sections() -> list[Section]:
    return [
        ("Now", [_phase_now(), charts.failing_since(MODEL), _diagnosis()]),
        ("History", [
            _scores(), _baseline_against_live(),
            charts.phase_timeline(MODEL, "capability", "{{capability}}", _model_links()),
            charts.delta_band(MODEL, "{{capability}} {{kind}}", accuracy=True),
            charts.delta_band(MODEL, "{{capability}} {{kind}}", accuracy=False),
            charts.knowledge(MODEL, "{{capability}}"), charts.alignment(MODEL, "{{capability}}")]),
        ("Actions and the monitor", [
            charts.freshness(MODEL, "{{suite}}"), charts.probe_errors(MODEL), charts.run_duration(MODEL),
            charts.actions(MODEL, "kind, status")]),
    ]


# -- variables, links, annotations, and the dashboards whole -----------------------------------

def _variables(per_model: bool) -> list[Any]:
    """The Prometheus to query, the monitor's address for links, and on the drill-down the model,
    version and capabilities to show (each listed from the series the monitor exports)."""
    from grafana_foundation_sdk.builders.dashboard import DatasourceVariable, TextBoxVariable

    found = [DatasourceVariable("datasource").label("Prometheus").type("prometheus")]
    scoped = _label_variables() if per_model else []
    address = (TextBoxVariable("monitor_url").label("forgetmenot address").default_value(MONITOR_URL)
               .description("Where the monitor's pages are served (forgetmenot serve), for the links."))
    return [*found, *scoped, address]


def _label_variables() -> list[Any]:
    from grafana_foundation_sdk.builders.dashboard import QueryVariable
    from grafana_foundation_sdk.models.dashboard import VariableRefresh, VariableSort

    def listed(name: str, matchers: str) -> Any:
        series = f"{m.RETENTION_SCORE.full_name}{{{matchers}}}" if matchers else m.RETENTION_SCORE.full_name
        return (QueryVariable(name).label(name).datasource(datasource())
                .query(f"label_values({series}, {name})")
                .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.ALPHABETICAL_ASC))

    capability = listed("capability", 'model="$model", version="$version"')
    return [listed("model", ""), listed("version", 'model="$model"'),
            capability.multi(True).include_all(True).all_value(".*")]


def _actions_annotation(scope: Scope) -> Any:
    from grafana_foundation_sdk.builders.dashboard import AnnotationQuery

    expr = f"sum by (model, kind, status) (increase({sel(m.ACTIONS, scope)}[$__rate_interval])) > 0"
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


GRAFANA_VALUES = {"__rate_interval": "1m", "__interval": "30s", "__range": "6h", "monitor_url": MONITOR_URL}
"""What Grafana puts in for its own variables, for running the queries without it."""


def queries(**values: str) -> list[tuple[str, str, str]]:
    """(dashboard file, panel or annotation, PromQL with the variables filled in as Grafana would)
    for every query the dashboards make: what the tests and the benchmark run in Prometheus.
    `values` are the template variables' values (model, version, capability)."""
    filled = {**GRAFANA_VALUES, **values}

    def fill(expr: str) -> str:  # `$1` (a label_replace group) is no variable and stays
        return re.sub(r"\$\{?(\w+)\}?", lambda found: filled.get(found.group(1), found.group(0)), expr)

    found = []
    for name, doc in build_all().items():
        panels = [p for p in doc["panels"] if p["type"] != "row"]
        found += [(name, p["title"], fill(t["expr"])) for p in panels for t in p["targets"]]
        found += [(name, a["name"], fill(a["expr"])) for a in doc["annotations"]["list"]]
    return found


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
