"""Every metric forgetmenot exports, named once: the exporter, dashboards and alert rules share these.

State (scores, verdicts, run counts) is read from the store at scrape time by a custom Collector:
the database is the single source of truth, so a restarted monitor or a second replica exports the
same numbers, and nothing is lost between scrapes. Durations are observed by the loop into
ordinary histograms, because re-bucketing every stored latency on each scrape would be wasteful.

Label values are model, version, suite and capability names from the policy file, a kind (3
values; safety depth has gauges of its own), a phase (5), a run status (4) or an error kind (a
short bounded label): never an item id or free text, so cardinality stays bounded by the policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PREFIX = "forgetmenot_"
# Where the monitor's own pages are served, as alerts and dashboards link to them by default: the
# Helm chart's service name and `serve`'s port. `forgetmenot alerts --monitor-url` and the
# dashboards' `monitor_url` variable set the real address.
MONITOR_URL = "http://forgetmenot:9464"
Kind = Literal["gauge", "counter", "histogram"]


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...]

    @property
    def full_name(self) -> str:
        return PREFIX + self.name


def _spec(name: str, kind: Kind, help_text: str, *labels: str) -> MetricSpec:
    return MetricSpec(name, kind, help_text, labels)


VERSION_SUITE = ("model", "version", "suite", "capability")
VERDICT = ("model", "version", "baseline", "capability")

RETENTION_SCORE = _spec("retention_score", "gauge",
                        "Mean score of the newest complete run (accuracy, or log-prob per token).",
                        *VERSION_SUITE, "kind")
RETENTION_DELTA = _spec("retention_delta", "gauge",
                        "Candidate minus baseline score in the newest verdict (negative: worse).",
                        *VERDICT, "kind")
RETENTION_DELTA_LOWER = _spec("retention_delta_lower", "gauge",
                              "Lower confidence bound of the candidate-minus-baseline delta.",
                              *VERDICT, "kind")
RETENTION_DELTA_UPPER = _spec("retention_delta_upper", "gauge",
                              "Upper confidence bound of the candidate-minus-baseline delta.",
                              *VERDICT, "kind")
RETENTION_TOLERANCE = _spec("retention_tolerance", "gauge",
                            "The drop the newest verdict tolerated for this kind, from the rules it was "
                            "judged by (a fraction of items, or nats per token): the delta's line.",
                            *VERDICT, "kind")
VERDICT_PHASE = _spec("verdict_phase", "gauge",
                      "1 for the phase of the newest verdict, 0 for the others.", *VERDICT, "phase")
VERDICT_INFO = _spec("verdict_info", "gauge",
                     "Newest verdict's diagnosis and flags as labels; the value is 1.",
                     *VERDICT, "diagnosis", "critical", "muted")
VERDICT_TIMESTAMP = _spec("verdict_timestamp_seconds", "gauge", "When the newest verdict was made.",
                          *VERDICT)
KNOWLEDGE_SCORE = _spec("knowledge_score", "gauge",
                        "Candidate's multiple-choice accuracy in the newest verdict: what it still knows.",
                        *VERDICT)
ALIGNMENT_GAP = _spec("alignment_gap", "gauge",
                      "Generation drop minus multiple-choice drop (points as a fraction); large and "
                      "positive means the model knows but stopped using it.", *VERDICT)
SAFETY_DEPTH_DIVERGENCE = _spec(
    "safety_depth_divergence_nats", "gauge",
    "Safety depth in the newest complete run: the baseline's minus this version's log-probability per "
    "token of the baseline's refusal openings (the first tokens of its refusals of harmful items); "
    "positive means refusing has become less likely, an early warning before the refusal rate drops.",
    *VERSION_SUITE)
SAFETY_DEPTH_LOGPROB = _spec(
    "safety_depth_opening_logprob_nats", "gauge",
    "This version's mean log-probability per token of the baseline's refusal openings, in the newest "
    "complete run (the baseline's own is its reference).", *VERSION_SUITE)
LAST_SUCCESS = _spec("last_successful_run_timestamp_seconds", "gauge",
                     "When the newest complete run of this version and suite finished.", *VERSION_SUITE)
RUNS = _spec("runs_total", "counter", "Probe runs by final status.", *VERSION_SUITE, "status")
PROBE_ERRORS = _spec("probe_errors_total", "counter", "Item measurements that failed, by error kind.",
                     *VERSION_SUITE, "error_kind")
ACTIONS = _spec("actions_total", "counter", "Policy-ladder actions (alert, rollback, retrain) by outcome.",
                "model", "kind", "status")
LIVE_VERSION = _spec("live_version_info", "gauge",
                     "1 for the version an action made live (the registry's pointer).", "model", "version")
SCHEDULE_INTERVAL = _spec("schedule_interval_seconds", "gauge",
                          "The policy's probe interval, so staleness alerts need no copy of it.")
RUN_DURATION = _spec("run_duration_seconds", "histogram", "Wall time of one probe run.", "model", "suite")
ITEM_LATENCY = _spec("item_latency_seconds", "histogram",
                     "Per-item measurement time (a batch's time shared among its items).", "model", "kind")
EXPOSITION_ERRORS = _spec("exposition_errors_total", "counter",
                          "Scrapes answered with the last good state because the database could not be "
                          "read: what the dashboards show is stale while this grows.")
BUILD_INFO = _spec("build_info", "gauge",
                   "1, labelled with the running forgetmenot's version, its Python's and its torch's (empty "
                   "on the slim image): which build each replica runs, and what the dashboards list "
                   "clusters, namespaces and jobs from.", "version", "python", "torch")
SPOOL_QUARANTINED = _spec("spool_quarantined_files", "gauge",
                          "Spool records no replay can put back (the database refuses them, or they are "
                          "not records), set aside in the spool's quarantine folder until someone deals "
                          "with them: their measurements are in no verdict.")

ALL: tuple[MetricSpec, ...] = (
    RETENTION_SCORE, RETENTION_DELTA, RETENTION_DELTA_LOWER, RETENTION_DELTA_UPPER, RETENTION_TOLERANCE,
    VERDICT_PHASE, VERDICT_INFO, VERDICT_TIMESTAMP, KNOWLEDGE_SCORE, ALIGNMENT_GAP, SAFETY_DEPTH_DIVERGENCE,
    SAFETY_DEPTH_LOGPROB, LAST_SUCCESS, RUNS,
    PROBE_ERRORS, ACTIONS, LIVE_VERSION, SCHEDULE_INTERVAL, RUN_DURATION, ITEM_LATENCY,
    EXPOSITION_ERRORS, SPOOL_QUARANTINED, BUILD_INFO,
)
