"""The gate a recovered version must pass before it may serve: judged against the baseline like any
candidate, better than the version it replaces where it was retrained, and the fine-tune's own
task kept within `target_max_drop` by the same paired test and bounds as every other tolerance."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from monitor.actions.retrain.plan import Plan
from monitor.judge import Judgement, judge_model, judge_runs
from monitor.policy.schema import Config, Rules
from monitor.policy.suites import Suite
from monitor.probing.factory import backend_for
from monitor.probing.run import VersionRef
from monitor.probing.version import Track, probe_version
from monitor.store import Store
from monitor.vocabulary import ActionKind, Diagnosis, Kind, Phase


@dataclass(frozen=True)
class Figure:
    """One kind of one suite: baseline, the version retrained from, and the retrained candidate."""

    suite: str
    kind: str
    baseline: float | None
    before: float | None
    after: float | None

    def recovered(self) -> float | None:
        """Share of the lost accuracy brought back; None where under 5 points were lost (a share of
        noise means nothing) and for fluency, which is not an accuracy."""
        if None in (self.baseline, self.before, self.after) or self.kind == Kind.LOGLIKELIHOOD_ROLLING:
            return None
        lost = self.baseline - self.before  # type: ignore[operator]
        return (self.after - self.before) / lost if lost >= 0.05 else None  # type: ignore[operator]


@dataclass(frozen=True)
class Outcome:
    """The gate's answer. `retry` holds the suites that another round could still fix (failing by
    alignment, on a capability whose ladder retrains) with the points each still lacks; `final`
    the problems no round fixes (knowledge lost, the target task dropped, a suite not judged)."""

    version: str
    summary: str
    problems: list[str]
    figures: list[Figure] = field(default_factory=list)
    target: list[Figure] = field(default_factory=list)
    retry: dict[str, float] = field(default_factory=dict)
    final: list[str] = field(default_factory=list)

    def retrainable(self) -> bool:
        """Rejected only for what more examples of the same kind could bring back."""
        return bool(self.problems) and bool(self.retry) and not self.final

    def recovered(self) -> float:
        """Mean share of the loss brought back over the figures that have one, each counted up to
        all of it (winning back more than was lost on one kind must not hide a shortfall on
        another): with fewer problems, how the best of several rejected rounds is chosen."""
        shares = [min(r, 1.0) for r in (f.recovered() for f in self.figures) if r is not None]
        return sum(shares) / len(shares) if shares else 0.0


def gate(store: Store, config: Config, suites: Sequence[Suite], model: str, name: str, source: str,
         the_plan: Plan, track: Track | None = None) -> Outcome:
    """Probe `name` (and the baseline where it lacks runs), judge it, and list every reason it may
    not serve; no problems means it may be promoted."""
    baseline = config.models[model].baseline
    _measured(store, config, model, baseline, suites, track)
    probe_version(store, VersionRef(model, name, baseline), suites, lambda: backend_for(config, model, name),
                  track=track)
    accepted = _accepted(config, model)
    judged = judge_model(store, config, suites, model, name, baseline)
    verdicts = {j.judgement.suite: j.judgement for j in judged.judged}
    missing = {suite.name: exc for suite, exc in judged.missing}
    retry: dict[str, float] = {}
    final = [f"{s.capability}: not judged ({missing[s.name]})" for s in suites if s.name in missing]
    problems = list(final)
    for suite in suites:
        if suite.name in missing:
            continue
        judgement = verdicts[suite.name]
        found = []
        if not judgement.rules.muted and judgement.phase not in accepted:
            found.append(f"{suite.capability} {judgement.phase} against {baseline}: {judgement.reason}")
        if Phase.INCONCLUSIVE in accepted and suite.capability in the_plan.capabilities:
            found += _not_better(store, suite, judgement.rules, model, source, name)
        problems += found
        if found and _retrainable(judgement):
            retry[suite.name] = lacking(figures(store, suite, model, baseline, source, name))
        elif found:
            final += found
    restored = [f for s in suites if s.capability in the_plan.capabilities or s.name in retry
                for f in figures(store, s, model, baseline, source, name)]
    target, kept = _target(store, config, suites, model, source, name, track)
    words = [_words(f) for f in restored] + [f"target {_words(f)}" for f in target]
    return Outcome(name, "; ".join(words), problems + kept, restored, target, retry, final + kept)


def _retrainable(judgement: Judgement) -> bool:
    """Alignment loss (or a loss measured one way only) on a capability whose ladder retrains;
    never knowledge loss, which rolls back, and never an ERROR, which says nothing of the model."""
    return (judgement.phase != Phase.ERROR and judgement.diagnosis != Diagnosis.KNOWLEDGE_LOSS
            and ActionKind.RETRAIN in judgement.rules.on_alignment_loss)


def lacking(found: Sequence[Figure]) -> float:
    """Points still lost against the baseline, the worst accuracy kind's (fluency is no accuracy)."""
    gaps = [f.baseline - f.after for f in found if f.kind != Kind.LOGLIKELIHOOD_ROLLING
            and f.baseline is not None and f.after is not None]
    return max(0.0, *gaps) if gaps else 0.0


def _accepted(config: Config, model: str) -> tuple[Phase, ...]:
    if config.models[model].retrain.promote_when == "pass":
        return (Phase.PASS,)
    return (Phase.PASS, Phase.INCONCLUSIVE)


def _not_better(store: Store, suite: Suite, rules: Rules, model: str, source: str, name: str) -> list[str]:
    """Under `promote_when: no_worse`, a capability the retraining was for must be confidently
    better than the failing version it would replace on the kinds it lost (upper bound of the
    drop below zero), so an unproven candidate never displaces live on a guess. A capability that
    was not failing on that version (one a later round added because an earlier round hurt it)
    owes nothing beyond what the baseline gate already asks."""
    lost = _lost_kinds(store, model, source, suite.capability)
    if lost is None:
        return []
    runs = []
    for version in (source, name):
        run = store.latest_complete_run(model, version, suite.content_hash)
        if run is None:
            return [f"{suite.capability}: {version} has no complete run to compare"]
        runs.append([(run, store.results(run.id or 0))])
    judgement = judge_runs(suite, rules, runs[0], runs[1])
    worse = [k for k in judgement.kinds if (not lost or k.kind in lost)
             and (k.result is None or k.result.high >= 0)]
    return [f"{suite.capability} {k.kind} is not confidently better than {source}"
            + (f" (drop bounds {k.result.low:+.1%} to {k.result.high:+.1%})" if k.result else "")
            for k in worse]


def _lost_kinds(store: Store, model: str, version: str, capability: str) -> set[str] | None:
    """The kinds that FAILed or were MARGINAL on `version`'s latest verdict for `capability`
    (empty: it failed, the kinds are not recorded, so all count); None where it was not failing."""
    history = [v for v in store.verdicts(model=model, candidate=version, capability=capability)
               if v.phase != Phase.ERROR]  # as `settle` does: an ERROR says nothing of the model
    if not history or history[-1].id is None or history[-1].phase not in (Phase.FAIL, Phase.MARGINAL):
        return None
    kinds = store.verdict_kinds([history[-1].id]).get(history[-1].id, [])
    return {k.kind for k in kinds if k.phase in (Phase.FAIL, Phase.MARGINAL)}


def _target(store: Store, config: Config, suites: Sequence[Suite], model: str, source: str, name: str,
            track: Track | None) -> tuple[list[Figure], list[str]]:
    """The fine-tune's own task on the recovered version against the one it was made from: the
    figures, and a problem per kind that the paired test does not accept within `target_max_drop`."""
    spec = config.models[model].retrain
    suite = next((s for s in suites if s.name == spec.target_suite), None)
    if suite is None:
        return [], []
    _measured(store, config, model, source, [suite], track)
    shown = [Figure(f.suite, f.kind, None, f.before, f.after)
             for f in figures(store, suite, model, None, source, name)]
    rules = config.policy.rules_for(suite.capability).model_copy(
        update={"max_drop": spec.target_max_drop, "min_score": None, "muted": False})
    return shown, target_problems(store, suite, rules, model, source, name, _accepted(config, model))


def target_problems(store: Store, suite: Suite, rules: Rules, model: str, source: str, name: str,
                    accepted: Sequence[Phase]) -> list[str]:
    """One problem per kind of the target suite whose paired drop from `source` to `name` is not
    accepted under `rules` (whose `max_drop` is `target_max_drop`): a mean drop under the limit
    whose bounds reach past it is not shown to be within it."""
    runs = [store.latest_complete_run(model, version, suite.content_hash) for version in (source, name)]
    if runs[0] is None or runs[1] is None:
        return [f"target {suite.name}: no complete run of {source} and {name} to compare"]
    judgement = judge_runs(suite, rules, [(runs[0], store.results(runs[0].id or 0))],
                           [(runs[1], store.results(runs[1].id or 0))])
    limit = f"target_max_drop {rules.max_drop:.0%}"
    return [f"target {suite.name} {k.kind} {k.phase} against {source} ({limit}): {k.reason}"
            for k in judgement.kinds if k.phase not in accepted]


def _measured(store: Store, config: Config, model: str, version: str, suites: Sequence[Suite],
              track: Track | None) -> None:
    """Make sure `version` has a run of each suite to compare with, measuring only what is missing."""
    backend = config.models[model].backend
    probe_version(store, VersionRef(model, version, config.models[model].baseline), suites,
                  lambda: backend_for(config, model, version),
                  reuse_on=(backend.kind, backend.dtype), track=track)


def figures(store: Store, suite: Suite, model: str, baseline: str | None, source: str,
             name: str) -> list[Figure]:
    def scores(version: str | None) -> dict[str, float | None]:
        run = store.latest_complete_run(model, version, suite.content_hash) if version else None
        if run is None or run.id is None:
            return {}
        return {s.kind: s.mean_score for s in store.summaries([run.id])[run.id]}

    base, before, after = scores(baseline), scores(source), scores(name)
    return [Figure(suite.name, kind, base.get(kind), before.get(kind), after.get(kind))
            for kind in suite.kinds if kind in after]


def _words(fig: Figure) -> str:
    def pct(value: float | None) -> str:
        return "?" if value is None else f"{value:.1%}"

    values = ([fig.baseline] if fig.baseline is not None else []) + [fig.before, fig.after]
    chain = " → ".join(pct(v) for v in values)
    recovered = fig.recovered()
    return f"{fig.suite} {fig.kind} {chain}" + (f" ({recovered:.0%} of the loss recovered)"
                                               if recovered is not None else "")
