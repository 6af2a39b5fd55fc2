"""Grafana panels as data: what a panel asks (its PromQL) apart from how Grafana draws it.

A `Chart` is a title, the question it answers and its queries, written only with the metric names
of `monitor.metrics.names`; `render` turns one into a grafana-foundation-sdk panel. Keeping the
queries as plain data lets the tests run every one of them in a real Prometheus without Grafana.

A verdict's phase is exported as one 0/1 series per phase; a panel that shows "the worst phase"
turns it into the phase's severity (`Phase.severity`, PASS lowest, FAIL highest) and maps each
number back to the phase's name *and* a colour (the monitor's pages' colour for that phase), so
nothing is told by colour alone.

Every replica of `forgetmenot serve` on one database exports the same state series, so a panel
takes each state series once (`once`: `max` by the series' own labels) before it sums or joins
anything; only what each replica measures itself (the run-duration histogram) is summed across
replicas. Every selection is narrowed by the `cluster`, `namespace` and `job` variables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from monitor.errors import MissingExtra
from monitor.metrics import names as m
from monitor.vocabulary import Phase

if TYPE_CHECKING:
    from grafana_foundation_sdk.cog.builder import Builder
    from grafana_foundation_sdk.models.dashboard import DataSourceRef

DATASOURCE_VAR = "datasource"
# The pages' phase badges' colours (monitor/present/html.py, `.phase.<phase>` border-color).
PHASE_COLOURS = {Phase.PASS: "#8fcfa4", Phase.INCONCLUSIVE: "#bcc4cc", Phase.ERROR: "#b79be6",
                 Phase.MARGINAL: "#e7c25a", Phase.FAIL: "#e48b86"}
TARGET = ("cluster", "namespace", "job")  # the scrape's labels, each chosen by a variable
KEEP = ("cluster", "namespace")  # what tells one deployment's copy of a series from another's
VERDICT_KEYS = "model, version, baseline, capability"
Scope = Mapping[str, str]
"""Label → matcher (`'="$model"'`, `'=~"$capability"'`); each metric takes the labels it has."""
Visual = Literal["stat", "timeseries", "state-timeline", "table"]


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True)
class Link:
    title: str
    url: str


@dataclass(frozen=True)
class Chart:
    """One panel: `description` says which question it answers."""

    visual: Visual
    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "none"
    phases: bool = False  # values are phase severities: map them to names and colours
    band: bool = False  # series named "... lower", "... upper", "... tolerance" drawn as a band
    thresholds: tuple[tuple[float | None, str], ...] = ()  # (from, colour), the first from None
    links: tuple[Link, ...] = ()
    width: int = 12
    height: int = 8


def require_sdk() -> None:
    """The dashboards extra, or an error that says how to install it."""
    try:
        import grafana_foundation_sdk  # noqa: F401
    except ImportError as exc:
        raise MissingExtra("grafana-foundation-sdk", "dashboards") from exc


# -- PromQL, from the metric names ------------------------------------------------------------

def sel(spec: m.MetricSpec, scope: Scope | None = None, *extra: str, suffix: str = "") -> str:
    """`spec`'s series of the chosen cluster, namespace and job, narrowed by the scope's labels it
    has, plus `extra` matchers."""
    matchers = [f'{label}=~"${label}"' for label in TARGET]
    matchers += [f"{label}{match}" for label, match in (scope or {}).items() if label in spec.labels]
    matchers += extra
    return f"{spec.full_name}{suffix}{{{', '.join(matchers)}}}"


def once(spec: m.MetricSpec, scope: Scope | None = None, *extra: str, fn: str = "", window: str = "") -> str:
    """`spec`'s series once however many replicas export them (`fn` over `window` first, for a
    counter): every replica reads the same database, so their copies are equal, and `max` keeps one."""
    series = sel(spec, scope, *extra)
    if fn:
        series = f"{fn}({series}[{window}])"
    return f"max by ({', '.join((*KEEP, *spec.labels))}) ({series})"


def is_phase(phase: Phase, scope: Scope | None = None) -> str:
    """The newest verdicts whose phase is `phase` (value 1)."""
    matcher = f'phase="{phase}"'
    return f"{sel(m.VERDICT_PHASE, scope, matcher)} == 1"


def severity(scope: Scope | None = None) -> str:
    """Each newest verdict as its phase's severity number (series keep the verdict's labels)."""
    ordered = sorted(Phase, key=lambda p: p.severity)
    terms = [f"({is_phase(phase, scope)}) * {phase.severity}" for phase in ordered]
    return "\n  or ".join(terms)


def worst_phase(by: str, scope: Scope | None = None, counted_only: bool = False) -> str:
    """The worst phase's severity per `by`; `counted_only` leaves muted capabilities out, as the
    monitor's own overall phase and the breach alerts do."""
    inner = severity(scope)
    if counted_only:
        muted = sel(m.VERDICT_INFO, scope, 'muted="true"')
        inner = f"(\n  {inner}\n) unless on ({VERDICT_KEYS}) {muted}"
    return f"max by ({by}) (\n  {inner}\n)"


def phase_mappings() -> list[Any]:
    """Severity → the phase's name and colour, for stat and state-timeline panels."""
    from grafana_foundation_sdk.models.dashboard import ValueMap, ValueMappingResult

    options = {str(phase.severity): ValueMappingResult(text=phase.value, color=PHASE_COLOURS[phase],
                                                       index=phase.severity)
               for phase in Phase}
    return [ValueMap(options=dict(sorted(options.items())))]


# -- Grafana, through grafana-foundation-sdk --------------------------------------------------

def datasource() -> DataSourceRef:
    from grafana_foundation_sdk.models.dashboard import DataSourceRef

    return DataSourceRef(type_val="prometheus", uid=f"${{{DATASOURCE_VAR}}}")


def _target(query: Query, ref_id: str, table: bool) -> Builder[Any]:
    from grafana_foundation_sdk.builders.prometheus import Dataquery
    from grafana_foundation_sdk.models.prometheus import PromQueryFormat

    target = Dataquery().expr(query.expr).ref_id(ref_id).datasource(datasource())
    target = target.legend_format(query.legend) if query.legend else target
    if not query.instant:
        return target.range()
    return target.instant().format(PromQueryFormat.TABLE) if table else target.instant()


def _links(links: tuple[Link, ...]) -> list[Any]:
    from grafana_foundation_sdk.builders.dashboard import DashboardLink

    return [DashboardLink(link.title).url(link.url) for link in links]


def _visual(chart: Chart) -> Any:
    """The panel builder of the chart's kind, with what that kind needs to read well."""
    from grafana_foundation_sdk.builders import stat, statetimeline, table, timeseries
    from grafana_foundation_sdk.models.common import BigValueColorMode, BigValueTextMode, VisibilityMode

    if chart.visual == "stat":
        return (stat.Panel().color_mode(BigValueColorMode.BACKGROUND)
                .text_mode(BigValueTextMode.VALUE_AND_NAME))
    if chart.visual == "state-timeline":
        return statetimeline.Panel().show_value(VisibilityMode.AUTO).merge_values(True).fill_opacity(80)
    if chart.visual == "table":
        return table.Panel().with_transformation(_hide_time())
    return timeseries.Panel().fill_opacity(0).line_width(2).span_nulls(True)


def _hide_time() -> Any:
    from grafana_foundation_sdk.models.dashboard import DataTransformerConfig

    return DataTransformerConfig(id_val="organize", options={"excludeByName": {"Time": True}})


def _band(panel: Any) -> Any:
    """Bounds as dashed lines, the tolerance as a red dashed line: the delta is read against both."""
    from grafana_foundation_sdk.models.dashboard import DynamicConfigValue

    dashed = DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [6, 4]})
    thin = DynamicConfigValue(id_val="custom.lineWidth", value=1)
    red = DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "red"})
    return (panel.override_by_regexp(".* (lower|upper)$", [dashed, thin])
            .override_by_regexp(".* tolerance$", [dashed, red]))


def render(chart: Chart, panel_id: int) -> Builder[Any]:
    """`chart` as a Grafana panel on the `datasource` template variable."""
    panel = (_visual(chart).id(panel_id).title(chart.title).description(chart.description)
             .datasource(datasource()).unit(chart.unit).span(chart.width).height(chart.height))
    for index, query in enumerate(chart.queries):
        panel = panel.with_target(_target(query, chr(ord("A") + index), chart.visual == "table"))
    if chart.phases:
        panel = panel.mappings(phase_mappings())
    if chart.band:
        panel = _band(panel)
    if chart.thresholds:
        panel = _coloured(panel, chart)
    return panel.data_links(_links(chart.links)) if chart.links else panel


def _coloured(panel: Any, chart: Chart) -> Any:
    """The thresholds, shown where the panel's kind shows them: a table's cells, a time series'
    background, a stat's own colour."""
    from grafana_foundation_sdk.builders.common import GraphThresholdsStyleConfig
    from grafana_foundation_sdk.builders.dashboard import ThresholdsConfig
    from grafana_foundation_sdk.models.common import (
        GraphThresholdsStyleMode,
        TableCellBackgroundDisplayMode,
        TableColoredBackgroundCellOptions,
    )
    from grafana_foundation_sdk.models.dashboard import Threshold, ThresholdsMode

    steps = [Threshold(value=value, color=colour) for value, colour in chart.thresholds]
    panel = panel.thresholds(ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(steps))
    if chart.visual == "table":
        cells = TableColoredBackgroundCellOptions(mode=TableCellBackgroundDisplayMode.BASIC)
        return panel.cell_options(cells)
    if chart.visual == "timeseries":
        return panel.thresholds_style(GraphThresholdsStyleConfig().mode(GraphThresholdsStyleMode.AREA))
    return panel
