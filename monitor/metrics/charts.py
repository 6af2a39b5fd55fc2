"""The charts both dashboards draw, each for a scope: the whole fleet, or one model's version.

Every chart's description is the question it answers. The PromQL is built from the metric names
(`monitor.metrics.names`), never typed; a legend names what tells its series apart in that scope.
Each axis has one unit: accuracy (a fraction of items) and log-likelihood (nats per token) are
never drawn on one axis. State series are taken `once` whatever the number of replicas.
"""

from __future__ import annotations

from monitor.metrics import names as m
from monitor.metrics.panels import (
    KEEP,
    VERDICT_KEYS,
    Chart,
    Link,
    Query,
    Scope,
    is_phase,
    once,
    sel,
    worst_phase,
)
from monitor.vocabulary import Kind, Phase

ACCURACY = '|'.join(k.value for k in Kind if k.binary)
ROLLING = Kind.LOGLIKELIHOOD_ROLLING.value
NATS = "suffix: nats/token"
KEPT = ", ".join(KEEP)


def kinds(accuracy: bool) -> str:
    """The matcher of the kinds scored in one unit: accuracy, or nats per token."""
    return f'kind=~"{ACCURACY}"' if accuracy else f'kind="{ROLLING}"'


def phase_timeline(scope: Scope, by: str, legend: str, links: tuple[Link, ...] = ()) -> Chart:
    return Chart("state-timeline", "Verdict phase over time",
                 "Since when has each capability been failing, and did it recover? Each row is the "
                 "newest verdict's phase at that moment, by name and colour.",
                 (Query(worst_phase(by, scope), legend),), phases=True, links=links, width=24, height=9)


def delta_band(scope: Scope, legend: str, accuracy: bool) -> Chart:
    """The candidate-minus-baseline delta, its confidence bounds, and minus the tolerance."""
    kind = kinds(accuracy)
    queries = (
        Query(once(m.RETENTION_DELTA, scope, kind), f"{legend} delta"),
        Query(once(m.RETENTION_DELTA_LOWER, scope, kind), f"{legend} lower"),
        Query(once(m.RETENTION_DELTA_UPPER, scope, kind), f"{legend} upper"),
        Query(f"-1 * {once(m.RETENTION_TOLERANCE, scope, kind)}", f"{legend} tolerance"),
    )
    if accuracy:
        return Chart("timeseries", "Accuracy delta against the tolerance",
                     "How badly, and how sure? Candidate minus baseline accuracy (multiple_choice, "
                     "generate_until) with its confidence bounds (dashed); the red dashed line is minus "
                     "the tolerance. FAIL means the upper bound is below the red line.",
                     queries, unit="percentunit", band=True)
    return Chart("timeseries", "Fluency delta against the tolerance (nats per token)",
                 "How badly has fluency moved? Candidate minus baseline log-likelihood per token "
                 "(loglikelihood_rolling) with its confidence bounds (dashed), against minus the "
                 "tolerance in nats per token (red dashed).", queries, unit=NATS, band=True)


def knowledge(scope: Scope, legend: str) -> Chart:
    return Chart("timeseries", "Knowledge score",
                 "Does it still know the answers? The candidate's multiple-choice accuracy in the newest "
                 "verdict: if it holds while generation drops, the knowledge is still in the weights.",
                 (Query(once(m.KNOWLEDGE_SCORE, scope), legend),), unit="percentunit")


def alignment(scope: Scope, legend: str) -> Chart:
    return Chart("timeseries", "Alignment gap",
                 "Does it know but no longer say it? Generation drop minus multiple-choice drop: large "
                 "and positive is alignment loss (retrain), near zero with both dropping is knowledge "
                 "loss (roll back).", (Query(once(m.ALIGNMENT_GAP, scope), legend),), unit="percentunit")


def safety_depth(scope: Scope, legend: str) -> Chart:
    """Read from log-probabilities alone, so it moves before greedy answers flip (`probing.depth`)."""
    return Chart("timeseries", "Safety depth: drift from the baseline's refusals",
                 "Is refusing harmful requests getting less likely, before the refusal rate shows it? "
                 "The baseline's minus this version's log-probability per token of the first tokens of "
                 "the baseline's own refusals (nats per token): 0 for the baseline, rising above 0 is an "
                 "early warning; no line where the baseline refused nothing.",
                 (Query(once(m.SAFETY_DEPTH_DIVERGENCE, scope), legend),), unit=NATS)


def past_tolerance(scope: Scope) -> Chart:
    drop = f"-1 * {once(m.RETENTION_DELTA, scope)}"
    return Chart("table", "How far past the tolerance",
                 "How badly is each capability forgetting? The newest verdict's drop minus the drop the "
                 "policy tolerates, per kind (points as a fraction; nats per token for "
                 "loglikelihood_rolling): above 0 (red) is past the tolerance.",
                 (Query(f"{drop}\n- {once(m.RETENTION_TOLERANCE, scope)}", instant=True),), width=8,
                 thresholds=((None, "green"), (0.0, "red")))


def failing_since(scope: Scope) -> Chart:
    fail = is_phase(Phase.FAIL, scope)
    expr = (f"1000 * min by ({VERDICT_KEYS}) (min_over_time(timestamp({fail})[$__range:]))\n"
            f"and on ({VERDICT_KEYS}) ({fail})")
    return Chart("table", "Failing since",
                 "Since when? For each capability whose newest verdict is FAIL, when the dashboard's time "
                 "range first saw it failing.", (Query(expr, instant=True),), unit="dateTimeFromNow", width=8)


def actions(scope: Scope, by: str) -> Chart:
    expr = f"sum by ({by}) ({once(m.ACTIONS, scope, fn='increase', window='$__range')}) > 0"
    return Chart("table", "Actions taken",
                 "What was done about it? Policy-ladder actions (alert, rollback, retrain) in the time "
                 "range, by outcome; `forgetmenot actions` shows each one's reason.",
                 (Query(expr, instant=True),))


def freshness(scope: Scope, legend: str) -> Chart:
    since = f"time() - max by ({KEPT}, model, version, suite) ({sel(m.LAST_SUCCESS, scope)})"
    interval = f"max by ({KEPT}) ({sel(m.SCHEDULE_INTERVAL, scope)})"
    return Chart("stat", "Schedule intervals since the last successful run",
                 "Are the verdicts current? Schedule intervals since each version and suite last "
                 "completed a probe run: orange from 2, red from 3, when the staleness alert fires.",
                 (Query(f"({since})\n/ on ({KEPT}) group_left () {interval}", legend, instant=True),),
                 unit="suffix: intervals", width=8,
                 thresholds=((None, "green"), (2.0, "orange"), (3.0, "red")))


def probe_errors(scope: Scope) -> Chart:
    errors = once(m.PROBE_ERRORS, scope, fn="rate", window="$__rate_interval")
    return Chart("timeseries", "Probe errors by kind",
                 "Is the measurement itself failing (endpoint down, timeouts, out of memory)? Item "
                 "errors per second by kind, red as soon as there are any: errors are never counted "
                 "as forgetting.",
                 (Query(f"sum by (model, error_kind) ({errors})", "{{model}} {{error_kind}}"),),
                 unit="cps", width=8, thresholds=((None, "green"), (0.0001, "red")))


def run_duration(scope: Scope) -> Chart:
    """Each replica observes only the runs it made: the histograms are summed across replicas."""
    def quantile(q: float) -> Query:
        buckets = sel(m.RUN_DURATION, scope, suffix="_bucket")
        expr = f"histogram_quantile({q}, sum by (le, model, suite) (rate({buckets}[$__rate_interval])))"
        return Query(expr, f"p{round(q * 100)} {{{{model}}}} {{{{suite}}}}")

    return Chart("timeseries", "Probe run duration",
                 "How long does one probe run take, and is it getting slower? The median and 90th "
                 "percentile wall time per model and suite.", (quantile(0.5), quantile(0.9)),
                 unit="s", width=8)
