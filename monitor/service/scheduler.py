"""`forgetmenot serve`: probe every watched version on the policy's schedule, judge, export.

Scheduling is APScheduler, its jobs held in memory and rebuilt from the policy at every start:
the policy is the schedule's only source, and nothing is pickled into the database (APScheduler's
SQLAlchemy job store unpickles rows on every replica, so write access to the database would have
been code execution). One job per watched model version (live, baseline, and every candidate
registered at runtime, picked up from the database at each heartbeat) runs all suites; a
job never overlaps itself (`max_instances=1`), late firings coalesce into one, and a firing later
than one interval is dropped as a misfire. Versions run at the same time, bounded by what they
share (`monitor.service.limits`: slots per served endpoint, per device, and in all), so a cycle
over many versions takes about as long as the slowest, and a stuck endpoint holds up its own
versions only. Judging and acting on one model's verdicts go one at a time.

Replica safety is by **row claims**, not leader election: each firing belongs to a time slot
(the interval number since the epoch, trigger aligned to it), and the replica that inserts the
row `probe:<model>:<version>:<slot>` first does the work; the others' inserts hit the primary key
and they skip. It needs no lease renewal and no extra component, works the same on SQLite and
PostgreSQL, and a replica that dies mid-slot cannot block the next slot.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from prometheus_client import CollectorRegistry, Gauge, Histogram

from monitor.actions import orphans
from monitor.errors import BackendError, ForgetmenotError, Stopping, StoreError
from monitor.judge import JudgeError, judge_suite
from monitor.metrics import names as metrics
from monitor.metrics.spool import SpoolCollector
from monitor.policy.loading import load_config, load_suites
from monitor.policy.schema import Config
from monitor.policy.suites import Suite
from monitor.probing.backends.base import Backend
from monitor.probing.backends.deadline import stopping_on
from monitor.probing.factory import backend_for
from monitor.probing.reelicit import Reelicitor, Shots
from monitor.probing.run import VersionRef
from monitor.probing.spool import spool_for
from monitor.service import events
from monitor.service.limits import Limits
from monitor.store import Run, Store
from monitor.store.coordination import process_id
from monitor.vocabulary import ErrorKind

log = logging.getLogger("forgetmenot.service")
BackendLoader = Callable[[Config, str, str], Backend]
CANDIDATES = "candidates"  # the executor candidate jobs run in
CANDIDATE_WORKERS = 2


@dataclass
class Monitor:
    config_path: Path
    config: Config
    store: Store
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    load_backend: BackendLoader = backend_for
    holder: str = field(default_factory=process_id)
    beat_every: float = 10.0
    stale_after: float = 60.0

    def __post_init__(self) -> None:
        self.suites: list[Suite] = load_suites(self.config)
        self.spool = spool_for(self.config)
        self.stopping = threading.Event()
        self.limits = Limits(self.config, self.stopping)
        # one model's verdicts are judged and acted on one at a time: an action moves its live
        self.acting = {name: threading.Lock() for name in self.config.models}
        self.scheduler: Any = None
        self.examples: dict[tuple[str, str, str], Shots] = {}  # re-elicitation's, by suite content
        self._jobs = threading.Lock()  # candidates are scheduled from the heartbeat and the API
        self.run_duration = _histogram(metrics.RUN_DURATION, self.registry,
                                       (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600))
        interval = Gauge(metrics.SCHEDULE_INTERVAL.full_name, metrics.SCHEDULE_INTERVAL.help,
                         registry=self.registry)
        interval.set(self.interval())
        self.item_latency = _histogram(metrics.ITEM_LATENCY, self.registry,
                                       (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.registry.register(SpoolCollector(self.spool))

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, run_now: bool = False) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        self._beat_once()
        self.replay_spool()
        threading.Thread(target=self._beat, name="forgetmenot-heartbeat", daemon=True).start()
        every = self.interval()
        self.scheduler = BackgroundScheduler(
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": int(every)},
            # one worker per watched version: a stuck model never delays another model's firing;
            # candidates have a small pool of their own, so many never crowd out live monitoring
            executors={"default": {"type": "threadpool", "max_workers": max(len(self.watched()), 1)},
                       CANDIDATES: {"type": "threadpool", "max_workers": CANDIDATE_WORKERS}},
            timezone=UTC)
        first = {"next_run_time": datetime.now(UTC)} if run_now else {}
        for model, version in self.watched():
            self.scheduler.add_job(self.fire, self._trigger(every), args=[model, version],
                                   id=f"probe:{model}:{version}", **first)
        self.scheduler.start()
        self.sync_candidates()

    def sync_candidates(self) -> list[tuple[str, str]]:
        """Schedule every registered candidate this monitor has no job for yet, probed at once,
        and drop the jobs of retired ones; a candidate is watched like any version meanwhile.
        Every replica does this at each heartbeat, and the slot claims keep them from measuring
        one twice."""
        if self.scheduler is None:
            return []
        added = []
        with self._jobs:
            wanted = {f"probe:{r.model}:{r.version}": (r.model, r.version) for r in self.store.candidates()
                      if r.model in self.config.models}
            for job in self.scheduler.get_jobs():
                if job.executor == CANDIDATES and job.id not in wanted:
                    job.remove()
                    log.info("no longer watching retired candidate %s", job.id.removeprefix("probe:"))
            for job_id, (model, version) in wanted.items():
                if self.scheduler.get_job(job_id) is None:
                    self.scheduler.add_job(self.fire, self._trigger(self.interval()), args=[model, version],
                                           id=job_id, executor=CANDIDATES, next_run_time=datetime.now(UTC))
                    added.append((model, version))
        for model, version in added:
            log.info("watching candidate %s/%s", model, version)
        return added

    def replay_spool(self) -> None:
        """Measurements kept while the database was away go back before anything new is measured."""
        try:
            done = self.spool.replay(self.store)
        except ForgetmenotError as exc:
            log.error("spool replay failed: %s", exc)
            return
        if done.runs:
            log.warning("replayed %d run(s), %d result(s) from the spool", done.runs, done.results)
        for failure in done.failed:
            log.error("spool: %s", failure)
        for quarantined in done.quarantined:
            log.error("spool: quarantined %s", quarantined)

    def degraded(self) -> list[str]:
        """What is wrong though the monitor still works, one line each, for /readyz: measurements
        set aside in the spool's quarantine, or held only in this process's memory."""
        return self.spool.problems()

    def _beat_once(self) -> None:
        """Say this monitor is alive, and close the runs of monitors that stopped saying so."""
        self.store.beat(self.holder)
        silent = timedelta(seconds=self.stale_after)
        reaped = self.store.reap(silent)
        if reaped:
            log.warning("marked %d run(s) of silent monitors as interrupted", reaped)
        for action in orphans.settle(self.store, self.config, self.holder, silent):
            log.warning("action %s of a process that is gone: %s (%s)", action.id, action.status,
                        action.detail)
        self.sync_candidates()

    def _beat(self) -> None:
        while not self.stopping.wait(self.beat_every):
            try:
                self._beat_once()
            except ForgetmenotError as exc:
                log.error("heartbeat failed: %s", exc)

    def _trigger(self, every: float) -> Any:
        from apscheduler.triggers.cron import CronTrigger
        from apscheduler.triggers.interval import IntervalTrigger

        jitter = int(self.config.schedule.jitter.total_seconds()) or None
        if self.config.schedule.cron:
            return CronTrigger.from_crontab(self.config.schedule.cron, timezone=UTC, jitter=jitter)
        start = datetime.fromtimestamp(0, UTC)  # aligned to the epoch: every replica agrees on slots
        return IntervalTrigger(seconds=every, start_date=start, jitter=jitter, timezone=UTC)

    def stop(self, wait: bool = True) -> None:
        """Ask a run in progress to stop at its next chunk, then shut the scheduler down."""
        self.stopping.set()
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=wait)

    def interval(self) -> float:
        every = self.config.schedule.every or timedelta(minutes=15)
        return every.total_seconds()

    def watched(self) -> list[tuple[str, str]]:
        return [(name, version) for name, spec in self.config.models.items()
                for version in dict.fromkeys((spec.baseline, spec.live))]

    def not_ready(self) -> str | None:
        if self.scheduler is None or not self.scheduler.running:
            return "scheduler not running"
        return None

    # -- one cycle ------------------------------------------------------------------------

    def fire(self, model: str, version: str) -> None:
        """The scheduled job: one cycle, its failures logged (the next firing tries again)."""
        try:
            self.cycle(model, version)
        except Stopping:
            log.info("%s/%s stopped part way; the run is marked interrupted", model, version)
        except ForgetmenotError as exc:
            log.error("%s/%s cycle failed: %s", model, version, exc)

    def slot(self, now: float | None = None) -> int:
        """The interval number this firing belongs to (rounded, so jitter either way agrees)."""
        return round((time.time() if now is None else now) / self.interval())

    def cycle(self, model: str, version: str, slot: int | None = None) -> bool:
        """Probe every suite on one version, then judge live against baseline. False if skipped.
        The slot is claimed once this process is free to work on it, so a slot never waits on a
        busy replica while another could take it, and a stop leaves no claim without work."""
        slot = self.slot() if slot is None else slot
        with self.limits.slot(model):
            if self.stopping.is_set():
                return False
            version = self._following_live(model, version)
            name = f"probe:{model}:{version}:{slot}"
            if not self.store.claim(name, self.holder):
                log.info("%s already claimed by another replica", name)
                return False
            self.replay_spool()
            with stopping_on(self.stopping):  # a stop ends the runs' outbound calls in flight
                self._probe_all(model, version)
        with self.acting[model]:
            self._judge(model, version)
            self._act(model)
        return True

    def _probe_all(self, model: str, version: str) -> None:
        """Every suite on one loaded backend, released on return: a retraining that may follow
        needs the memory."""
        backend = self._load(model, version)
        try:
            for suite in self.suites:
                if self.stopping.is_set():
                    raise Stopping(f"stopping before {suite.name}")
                self._probe(backend, suite, model, version)
        finally:
            if backend is not None:
                backend.close()

    def _following_live(self, model: str, version: str) -> str:
        """The live job probes whatever an action has made live since the policy file was written."""

        spec = self.config.models[model]
        if version == spec.live and version != spec.baseline:
            return self.store.live_version(self.config, model)
        return version

    def _load(self, model: str, version: str) -> Backend | None:
        from monitor.store.versions import with_made

        try:  # the live version may be one recovery retraining built since the start
            return self.load_backend(with_made(self.config, self.store), model, version)
        except BackendError as exc:
            log.error("%s/%s will not load: %s", model, version, exc)
            return None

    def _probe(self, backend: Backend | None, suite: Suite, model: str, version: str) -> None:
        from monitor.probing.version import probe_version

        began = time.monotonic()

        def advance(_: int) -> None:
            if self.stopping.is_set():
                raise Stopping("stop requested")

        def load() -> Backend:
            if backend is None:
                raise BackendError(f"{model}/{version} could not be loaded", kind=ErrorKind.LOAD)
            return cast(Backend, Lent(backend))

        baseline = self.config.models[model].baseline  # what safety depth measures against
        measured = probe_version(self.store, VersionRef(model, version, baseline), [suite], load,
                                 track=lambda _name, _total: advance, holder=self.holder, spool=self.spool)
        took = time.monotonic() - began
        self.run_duration.labels(model, suite.name).observe(took)
        self._ran(measured[0].run, took)
        for result in self.store.results(measured[0].run.id or 0):
            if result.latency_ms is not None:
                self.item_latency.labels(model, result.kind).observe(result.latency_ms / 1000)

    def _ran(self, run: Run, seconds: float) -> None:
        """A line for the run as stored; without its scores while the database is away (the spool
        keeps them, and the replay says so)."""
        run_id = run.id or 0
        try:
            kinds = self.store.summaries([run_id]).get(run_id, [])
            failed = self.store.run_errors([run_id]).get(run_id)
        except StoreError:
            kinds, failed = [], None
        events.ran(log, run, kinds, failed, seconds)

    def _judge(self, model: str, version: str) -> None:
        """Live (the registry's pointer once an action has moved it) against the baseline; a
        candidate just probed against the baseline and against live, for the gate."""
        from monitor.judge.gate import references

        spec = self.config.models[model]
        live = self.store.live_version(self.config, model)
        if version in (spec.baseline, live):
            pairs = [] if live == spec.baseline else [(live, spec.baseline)]
        else:
            pairs = [(version, ref) for ref in references(self.config, self.store, model, version)]
        for candidate, baseline in pairs:
            for suite in self.suites:
                self._judge_suite(model, suite, candidate, baseline)

    def _judge_suite(self, model: str, suite: Suite, candidate: str, baseline: str) -> None:
        """One verdict and its line; none while either version has no finished run of the suite.
        Failing generation is re-elicited on the candidate first: the diagnosis's second witness."""
        rules = self.config.policy.rules_for(suite.capability)
        try:
            judgement, verdict = judge_suite(self.store, suite, rules, model, candidate, baseline,
                                             self._reelicitor(model, candidate, baseline))
        except JudgeError as exc:
            log.info("no verdict yet for %s/%s against %s: %s", model, suite.name, baseline, exc)
            return
        head = judgement.headline()
        events.judged(log, verdict, head.kind if head else None)

    def _reelicitor(self, model: str, candidate: str, baseline: str) -> Reelicitor:
        """Each version's backend loaded only if a suite's generation failed, holding a run slot
        while loaded; the baseline's examples are kept for the life of this monitor."""
        from monitor.store.versions import with_made

        def stop(_: int) -> None:
            if self.stopping.is_set():
                raise Stopping("stop requested while re-eliciting")

        def load(version: str) -> Callable[[], Backend]:
            return lambda: self.limits.held(
                model, lambda: self.load_backend(with_made(self.config, self.store), model, version))

        return Reelicitor(load(candidate), load(baseline), holder=self.holder, spool=self.spool,
                          advance=stop, known=self.examples)

    def _act(self, model: str) -> None:
        """The policy ladder on what the judge just settled; a verdict is acted on once."""
        from monitor.actions.ladder import act
        from monitor.actions.retrain import Hooks

        def steps(_total: int, _label: str) -> Callable[[int, float], None]:
            def advance(_n: int, _loss: float) -> None:
                if self.stopping.is_set():  # a retraining stops at its next step; the action fails
                    raise Stopping("stop requested during retraining")
            return advance

        def track(_name: str, _total: int) -> Callable[[int], None]:
            def advance(_n: int) -> None:
                if self.stopping.is_set():
                    raise Stopping("stop requested while probing a recovered version")
            return advance

        hooks = Hooks(steps=steps, track=track, hold=lambda: self.limits.device(model),
                      stopping=self.stopping.is_set)
        for action in act(self.store, self.config, model, self.holder, hooks):
            events.acted(log, action)


class Lent:
    """The version's backend lent to one suite's run: the run's `close` is a no-op, the cycle
    closes it once after every suite (a Ray worker holding the model is started once a cycle)."""

    def __init__(self, backend: Backend) -> None:
        object.__setattr__(self, "_backend", backend)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._backend, name, value)  # calibration sets batch_size on the real one

    def close(self) -> None:
        pass


def _histogram(spec: metrics.MetricSpec, registry: CollectorRegistry,
               buckets: tuple[float, ...]) -> Histogram:
    return Histogram(spec.full_name, spec.help, list(spec.labels), registry=registry, buckets=buckets)


def open_monitor(config_path: Path, load_backend: BackendLoader = backend_for) -> Monitor:
    config = load_config(config_path)
    return Monitor(config_path, config, Store(config.database_url()), load_backend=load_backend)
