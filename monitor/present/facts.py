"""Gathering what verdict summaries are made from (`monitor.present.summary`), in few queries.

One `Summaries` serves one request or one alert: each model's recent actions and live version are
read once, and the errors of every ERROR verdict's runs in one query, however many verdicts it
summarizes (the API lists up to a thousand).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from monitor.errors import ForgetmenotError
from monitor.judge import verdict_rules
from monitor.metrics.rules import RUNBOOK_BASE
from monitor.policy.schema import Config, Rules
from monitor.policy.suites import Suite
from monitor.present.summary import Facts, Summary, summarize
from monitor.redaction import redact
from monitor.store import Action, Store, Verdict, VerdictKind
from monitor.store.runs import RunErrors
from monitor.vocabulary import Phase, RunStatus, Split, TriggeredBy

RECENT_ACTIONS = 200  # per model: where a verdict's ladder actions are looked for


class Summaries:
    def __init__(self, store: Store, config: Config, suites: Callable[[], Sequence[Suite]] = tuple,
                 runbook_base: str = RUNBOOK_BASE) -> None:
        """`suites` are asked for lazily (a page of a PASS needs none)."""
        self.store = store
        self.config = config
        self.suites = suites
        self.runbook_base = runbook_base
        self._actions: dict[str, list[Action]] = {}
        self._live: dict[str, str] = {}
        self._errors: dict[int, RunErrors] = {}
        self._asked: set[int] = set()

    def of(self, verdict: Verdict, kinds: Sequence[VerdictKind]) -> Summary:
        return summarize(self.facts(verdict, kinds))

    def prefetch(self, verdicts: Sequence[Verdict]) -> None:
        """The run errors of every ERROR verdict among `verdicts`, in one query."""
        broken = [v for v in verdicts if v.phase == Phase.ERROR]
        self._read_errors([run for v in broken for run in run_ids(v)])

    def facts(self, verdict: Verdict, kinds: Sequence[VerdictKind]) -> Facts:
        errors = self._run_errors(verdict) if verdict.phase == Phase.ERROR else []
        return Facts(verdict, kinds, self._rules(verdict), self.config.policy.guards,
                     self.live(verdict.model), self.ladder(verdict), errors,
                     endpoint(self.config, verdict.model), self._probe_items(verdict),
                     self.runbook_base)

    def live(self, model: str) -> str:
        if model not in self._live:
            known = model in self.config.models
            self._live[model] = self.store.live_version(self.config, model) if known else "—"
        return self._live[model]

    def ladder(self, verdict: Verdict) -> list[Action]:
        """What the ladder did about this verdict's failure, oldest first: the actions of the newest
        verdict at or before it that set the ladder off on this capability and candidate. The
        ladder acts once per failure, so later verdicts of the same failure caused none of their own."""
        if verdict.phase != Phase.FAIL:
            return []
        if verdict.model not in self._actions:
            self._actions[verdict.model] = self.store.actions(verdict.model, newest=RECENT_ACTIONS)
        mine = [a for a in self._actions[verdict.model] if _acted_on(a, verdict)]
        trigger = max((a.verdict_id or 0 for a in mine), default=None)
        return [a for a in mine if a.verdict_id == trigger]

    def suite(self, name: str) -> Suite | None:
        """The monitor's suite of that name; None where the suites cannot be loaded now (a page
        still shows what the store holds)."""
        try:
            found = [s for s in self.suites() if s.name == name]
        except ForgetmenotError:
            return None
        return found[0] if found else None

    def _rules(self, verdict: Verdict) -> Rules:
        """As judged; today's policy for a verdict whose stored rules this version cannot read."""
        try:
            return verdict_rules(verdict, self.config)
        except ValueError:
            return self.config.policy.rules_for(verdict.capability)

    def _run_errors(self, verdict: Verdict) -> list[RunErrors]:
        self._read_errors(run_ids(verdict))
        found = [self._errors[run] for run in run_ids(verdict) if run in self._errors]
        return [f for f in found if f.kinds or f.run.status != RunStatus.COMPLETE]

    def _read_errors(self, runs: Sequence[int]) -> None:
        """Each run asked about once, found or not (a run may have been deleted since)."""
        wanted = [run for run in runs if run not in self._asked]
        if wanted:
            self._errors.update(self.store.run_errors(wanted))
            self._asked.update(wanted)

    def _probe_items(self, verdict: Verdict) -> int | None:
        if verdict.phase != Phase.INCONCLUSIVE:
            return None
        suite = self.suite(verdict.suite)
        return len(suite.select(Split.PROBE)) if suite is not None else None


def _acted_on(action: Action, verdict: Verdict) -> bool:
    return (action.trigger != TriggeredBy.MANUAL and action.verdict_id is not None
            and action.verdict_id <= (verdict.id or 0) and action.capability == verdict.capability
            and action.from_version == verdict.candidate)


def run_ids(verdict: Verdict) -> list[int]:
    """The verdict's runs, candidate's first."""
    joined = f"{verdict.candidate_runs},{verdict.baseline_runs}"
    return [int(part) for part in joined.split(",") if part.strip().isdigit()]


def endpoint(config: Config, model: str) -> str | None:
    """Where the model is measured, as on-call would look for it; credentials masked."""
    spec = config.models.get(model)
    if spec is None:
        return None
    backend = spec.backend
    if backend.kind != "openai":
        return f"in process ({backend.kind} on {backend.device})"
    return redact(backend.base_url or "")
