"""A Prometheus Collector that reads the store at scrape time (see monitor.metrics for why).

Five grouped queries per scrape, whatever the history size: newest complete run per version and
suite (with its per-kind scores), its safety depth, run counts by status, error counts by kind,
and newest verdict per candidate and capability (with its per-kind statistics).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_text
from prometheus_client.registry import Collector
from sqlalchemy import func, or_
from sqlalchemy import select as sa_select
from sqlmodel import col

from monitor.errors import StoreError
from monitor.metrics import names as m
from monitor.probing.reelicit import SUFFIX as REELICITED
from monitor.store import (
    Action,
    ItemResult,
    LiveVersion,
    ModelVersion,
    Run,
    RunError,
    RunKind,
    Store,
    Verdict,
    VerdictKind,
)
from monitor.vocabulary import CANDIDATE, LADDER, MOVES, SAFETY_DEPTH, ActionStatus, Kind, Phase, RunStatus

log = logging.getLogger(__name__)

# Every (kind, status) series exists from the start, for outcomes only: `planned` and
# `deploying` are moments in an action's life, not how it ended.
ACTION_STATUSES = tuple(s for s in ActionStatus if not s.unfinished)


def _family(spec: m.MetricSpec) -> Any:
    cls = CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily
    name = spec.full_name.removesuffix("_total") if spec.kind == "counter" else spec.full_name
    return cls(name, spec.help, labels=list(spec.labels))


class StoreCollector(Collector):
    def __init__(self, store: Store) -> None:
        self.store = store

    def describe(self) -> list[Metric]:
        return []  # registering must not touch the database

    def collect(self) -> Iterator[Metric]:
        with self.store.session() as s:
            retired = _retired(s)
            yield from self._runs(s, retired)
            yield from self._verdicts(s, retired)
            yield from self._actions(s)

    def _runs(self, s: Any, retired: set[tuple[str, str]]) -> Iterator[Metric]:
        score, last = _family(m.RETENTION_SCORE), _family(m.LAST_SUCCESS)
        newest = (sa_select(func.max(Run.id)).where(col(Run.status) == RunStatus.COMPLETE)
                  .group_by(col(Run.model), col(Run.version), col(Run.suite)))
        query = (sa_select(Run, RunKind).join(RunKind, col(RunKind.run_id) == col(Run.id))
                 .where(col(Run.id).in_(newest), col(RunKind.kind) != SAFETY_DEPTH)
                 .order_by(col(Run.id), col(RunKind.kind)))
        seen: set[int] = set()
        for run, kind in s.execute(query).all():
            labels = [run.model, run.version, run.suite, run.capability]
            if kind.mean_score is not None:
                score.add_metric([*labels, kind.kind], kind.mean_score)
            watched = run.finished_at is not None and (run.model, run.version) not in retired
            asked_again = run.suite.endswith(REELICITED)  # measured only while failing: never stale
            if run.id not in seen and watched and not asked_again:
                seen.add(run.id)
                last.add_metric(labels, run.finished_at.timestamp())
        yield score
        yield last
        yield from _depth(s, newest)
        yield self._run_counts(s)
        yield self._error_counts(s)

    def _run_counts(self, s: Any) -> Metric:
        family = _family(m.RUNS)
        keys = (col(Run.model), col(Run.version), col(Run.suite), col(Run.capability), col(Run.status))
        for *labels, count in s.execute(sa_select(*keys, func.count()).group_by(*keys).order_by(*keys)).all():
            family.add_metric(labels, count)
        return family

    def _error_counts(self, s: Any) -> Metric:
        family = _family(m.PROBE_ERRORS)
        keys = (col(Run.model), col(Run.version), col(Run.suite), col(Run.capability),
                col(RunError.error_kind))
        query = (sa_select(*keys, func.sum(RunError.count)).join(Run, col(Run.id) == col(RunError.run_id))
                 .group_by(*keys).order_by(*keys))
        for *labels, count in s.execute(query).all():
            family.add_metric(labels, int(count))
        return family

    def _actions(self, s: Any) -> Iterator[Metric]:
        """Every model measured gets every (kind, status) series, zeros included: a counter that
        first appears at 1 has no increase for a rule to see."""
        counts = _family(m.ACTIONS)
        keys = (col(Action.model), col(Action.kind), col(Action.status))
        found = {tuple(row[:3]): row[3] for row in
                 s.execute(sa_select(*keys, func.count()).group_by(*keys)).all()}
        kinds = sorted({*LADDER, *(k for _, k, _ in found)})
        statuses = sorted({*ACTION_STATUSES, *(st for _, _, st in found)})
        measured = s.execute(sa_select(col(ModelVersion.model)).distinct()).scalars().all()
        for model in sorted({*measured, *(model for model, _, _ in found)}):
            for kind in kinds:
                for status in statuses:
                    counts.add_metric([model, kind, status], found.get((model, kind, status), 0))
        yield counts
        live = _family(m.LIVE_VERSION)
        pointers = (sa_select(col(LiveVersion.model), col(LiveVersion.version))
                    .order_by(col(LiveVersion.model)))
        for row in s.execute(pointers):
            live.add_metric(list(row), 1)
        yield live

    def _verdicts(self, s: Any, retired: set[tuple[str, str]]) -> Iterator[Metric]:
        families = {spec.name: _family(spec) for spec in (
            m.RETENTION_DELTA, m.RETENTION_DELTA_LOWER, m.RETENTION_DELTA_UPPER, m.RETENTION_TOLERANCE,
            m.VERDICT_PHASE,
            m.VERDICT_INFO, m.VERDICT_TIMESTAMP, m.KNOWLEDGE_SCORE, m.ALIGNMENT_GAP)}
        newest = (sa_select(func.max(Verdict.id)).group_by(
            col(Verdict.model), col(Verdict.candidate), col(Verdict.baseline), col(Verdict.capability)))
        verdicts = s.execute(sa_select(Verdict).where(col(Verdict.id).in_(newest))
                             .order_by(col(Verdict.id))).scalars().all()
        kinds = self.store.verdict_kinds([v.id for v in verdicts if v.id is not None])
        for verdict in verdicts:
            if (verdict.model, verdict.candidate) not in retired:
                _verdict_metrics(families, verdict, kinds.get(verdict.id or 0, []))
        yield from families.values()


def _depth(s: Any, newest: Any) -> Iterator[Metric]:
    """Safety depth of each newest complete run that measured it (`monitor.probing.depth`): the
    means over its items, errors left out (SQL's avg skips NULL); no series where none was measured."""
    divergence, logprob = _family(m.SAFETY_DEPTH_DIVERGENCE), _family(m.SAFETY_DEPTH_LOGPROB)
    keys = (col(Run.model), col(Run.version), col(Run.suite), col(Run.capability))
    query = (sa_select(*keys, func.avg(ItemResult.margin), func.avg(ItemResult.score))
             .join(ItemResult, col(ItemResult.run_id) == col(Run.id))
             .where(col(Run.id).in_(newest), col(ItemResult.kind) == SAFETY_DEPTH)
             .group_by(col(Run.id), *keys).order_by(*keys))
    for *labels, apart, opening in s.execute(query).all():
        if apart is not None:
            divergence.add_metric(labels, float(apart))
        if opening is not None:
            logprob.add_metric(labels, float(opening))
    yield divergence
    yield logprob


def _retired(s: Any) -> set[tuple[str, str]]:
    """Versions that no longer serve and are not the baseline: moved away from by an action,
    built by recovery retraining and never made live, or registered as candidates and not live
    (the gate is where a candidate's verdicts go: it never took traffic, so it pages no one).
    Their last verdict and last run would otherwise page (breach, stale) forever; their scores
    stay, as history."""
    live = dict(s.execute(sa_select(col(LiveVersion.model), col(LiveVersion.version))).all())
    left = s.execute(sa_select(col(Action.model), col(Action.from_version)).where(
        col(Action.kind).in_(MOVES), col(Action.status) == ActionStatus.DONE)).all()
    made = s.execute(sa_select(col(ModelVersion.model), col(ModelVersion.version)).where(
        or_(col(ModelVersion.path).is_not(None), col(ModelVersion.source).startswith(CANDIDATE)))).all()
    return {(model, version) for model, version in (*left, *made) if version and live.get(model) != version}


def _verdict_metrics(f: dict[str, Any], v: Verdict, kinds: list[VerdictKind]) -> None:
    labels = [v.model, v.candidate, v.baseline, v.capability]
    for phase in Phase:
        f[m.VERDICT_PHASE.name].add_metric([*labels, phase], 1.0 if v.phase == phase else 0.0)
    flags = [v.diagnosis, str(v.critical).lower(), str(v.muted).lower()]
    f[m.VERDICT_INFO.name].add_metric([*labels, *flags], 1)
    f[m.VERDICT_TIMESTAMP.name].add_metric(labels, v.created_at.timestamp())
    by_kind = {k.kind: k for k in kinds}
    for k in kinds:
        if k.drop is not None and k.low is not None and k.high is not None:
            f[m.RETENTION_DELTA.name].add_metric([*labels, k.kind], 0.0 - k.drop)
            f[m.RETENTION_DELTA_LOWER.name].add_metric([*labels, k.kind], 0.0 - k.high)
            f[m.RETENTION_DELTA_UPPER.name].add_metric([*labels, k.kind], 0.0 - k.low)
    _tolerances(f[m.RETENTION_TOLERANCE.name], labels, v, kinds)
    mc, gen = by_kind.get(Kind.MULTIPLE_CHOICE), by_kind.get(Kind.GENERATE_UNTIL)
    if mc is not None and mc.candidate_score is not None:
        f[m.KNOWLEDGE_SCORE.name].add_metric(labels, mc.candidate_score)
    if mc is not None and gen is not None and mc.drop is not None and gen.drop is not None:
        f[m.ALIGNMENT_GAP.name].add_metric(labels, gen.drop - mc.drop)


def _tolerances(family: Any, labels: list[str], v: Verdict, kinds: list[VerdictKind]) -> None:
    """The drop each kind was held to, from the rules stored with the verdict: a policy edit since
    must not move the line an old delta was judged against. Read as plain JSON, so no stored row
    can fail a scrape; a verdict made before rules were stored (migration 0004) shows none."""
    try:
        rules = json.loads(v.rules) if v.rules else {}
    except ValueError:
        rules = {}
    if not isinstance(rules, dict):
        return
    for k in kinds:
        limit = rules.get("max_drop" if Kind(k.kind).binary else "max_drop_nats")
        if k.drop is not None and isinstance(limit, int | float):
            family.add_metric([*labels, k.kind], float(limit))


class CachedExposition:
    """The store's exposition text, rendered again only when the store changed.

    State moves when a run finishes or a verdict is stored: every few minutes, while Prometheus
    scrapes every few seconds. Each scrape asks the database one cheap question (newest run id,
    newest finish time, newest verdict id). When the answer changed, the text is rendered again in
    the background and the scrape gets the previous text, at most one render behind; only the
    very first scrape waits for a render. So a scrape stays fast however large the store is.
    Each render reads the store once and writes both the Prometheus text and the OpenMetrics text
    (what Prometheus asks for by default), so neither format waits for the other.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._registry = CollectorRegistry()
        self._registry.register(StoreCollector(store))
        self._key: tuple[Any, ...] | None = None
        self._texts: tuple[bytes, bytes] | None = None  # Prometheus text, OpenMetrics text
        self._lock = threading.Lock()
        self._rendering: threading.Thread | None = None

    def _change_key(self) -> tuple[Any, ...]:
        with self.store.session() as s:
            runs = s.execute(sa_select(func.max(Run.id), func.max(Run.finished_at),
                                        func.count(col(Run.id)))).one()
            verdict = s.execute(sa_select(func.max(Verdict.id))).one()
            acted = s.execute(sa_select(func.max(Action.id), func.max(Action.finished_at))).one()
        return (*runs, *verdict, *acted)

    def render(self, wait: bool = False, openmetrics: bool = False) -> bytes:
        """The newest finished render; `wait=True` renders a changed store before answering."""
        key = self._change_key()
        with self._lock:
            stale = key != self._key
            first = self._texts is None
            busy = self._rendering is not None and self._rendering.is_alive()
            if stale and not busy:
                self._rendering = threading.Thread(target=self._refresh, args=(key,), daemon=True)
                self._rendering.start()
            thread = self._rendering
        if thread is not None and (first or (wait and stale)):
            thread.join()
        found = self.last(openmetrics)
        if found is None:
            raise StoreError("the store's state could not be rendered; the monitor's log says why")
        return found

    def last(self, openmetrics: bool = False) -> bytes | None:
        """The newest text rendered, whatever the database says now."""
        texts = self._texts
        return None if texts is None else texts[openmetrics]

    def _refresh(self, key: tuple[Any, ...]) -> None:
        try:
            read = _Read(list(self._registry.collect()))
            texts = (generate_latest(read), openmetrics_text(read))
        except Exception as exc:  # the next scrape tries again; until then the last text stands
            log.warning("the store's exposition could not be rendered: %s", exc)
            return
        with self._lock:
            self._texts, self._key = texts, key


class _Read(Collector):
    """Families already read from the store, to be written in more than one format."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)
