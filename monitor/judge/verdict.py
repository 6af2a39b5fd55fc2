"""Turn runs into verdicts: paired comparison, policy phases, knowledge-vs-alignment diagnosis.

A verdict compares a candidate version with the baseline on one suite, item by item, on exactly
the same suite content (same hash) and the same backend and dtype. Phases, per kind:

* PASS: confident the drop is within the tolerance (the drop's upper bound is at most it);
* FAIL: confident it exceeds the tolerance (lower bound above it), or the candidate is confidently
  below the `min_score` floor;
* MARGINAL: the estimate is beyond tolerance, not yet with the required confidence;
* INCONCLUSIVE: fewer than `min_items` usable pairs, or an estimate within tolerance whose
  interval still reaches past it;
* ERROR: a run failed, was interrupted, or more than 10% of its items errored. Never a FAIL.

A capability takes the worst phase of its kinds (FAIL > MARGINAL > ERROR > INCONCLUSIVE > PASS).
For suites measured both ways on the same items, generation dropping while multiple-choice
log-likelihood holds is *alignment loss*; both dropping is *knowledge loss*.
"""

from __future__ import annotations

from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from monitor import units
from monitor.judge.stats import PairedResult, paired_binary, paired_continuous
from monitor.policy.schema import Rules
from monitor.policy.suites import Suite
from monitor.store import ItemResult, Run
from monitor.vocabulary import Diagnosis, Kind, Phase, RunStatus

MAX_ERROR_SHARE = 0.10


@dataclass(frozen=True)
class KindJudgement:
    kind: Kind
    phase: Phase
    reason: str
    result: PairedResult | None = None
    margin: PairedResult | None = None
    excluded: int = 0
    quarantined: int = 0


@dataclass(frozen=True)
class Judgement:
    suite: str
    capability: str
    phase: Phase
    diagnosis: Diagnosis
    reason: str
    kinds: list[KindJudgement]
    rules: Rules
    candidate_runs: list[int] = field(default_factory=list)
    baseline_runs: list[int] = field(default_factory=list)

    def headline(self) -> KindJudgement | None:
        return max(self.kinds, key=lambda k: k.phase.severity, default=None)


def decide(result: PairedResult, rules: Rules, unit: str = units.POINTS) -> tuple[Phase, str]:
    """The phase of one paired result under one capability's rules, with the reason in words.

    Accuracy drops (`pts`) are held to `max_drop`, a fraction of items; perplexity drops
    (`nats/token`) to `max_drop_nats`: two units, two tolerances. The reason writes them as
    `monitor.units` does everywhere: a drop positive when the candidate is worse.
    """
    kind = Kind.GENERATE_UNTIL if unit == units.POINTS else Kind.LOGLIKELIHOOD_ROLLING
    limit = rules.max_drop if unit == units.POINTS else rules.max_drop_nats
    tolerance = units.tolerance_text(kind, limit)
    bounds = f"{rules.confidence:.0%} bounds {units.bounds_text(kind, result.low, result.high)}"
    drop = f"drop {units.drop_text(kind, result.drop)} ({bounds})"
    if rules.min_score is not None and unit == units.POINTS and _floor_broken(result, rules):
        floor = units.score_text(kind, rules.min_score)
        return Phase.FAIL, f"candidate {units.score_text(kind, result.candidate)} is below the floor {floor}"
    if result.low > limit:
        return Phase.FAIL, f"{drop} exceeds the tolerance {tolerance}"
    if result.high <= limit:
        return Phase.PASS, f"{drop} is within the tolerance {tolerance}"
    if result.drop > limit:
        return Phase.MARGINAL, (f"{drop} is past the tolerance {tolerance}, not yet with "
                                f"{rules.confidence:.0%}")
    return Phase.INCONCLUSIVE, f"{drop}: within the tolerance {tolerance} but not confidently"


def _floor_broken(result: PairedResult, rules: Rules) -> bool:
    from scipy.stats import binomtest

    correct = round(result.candidate * result.n)
    high = binomtest(correct, result.n).proportion_ci(2 * rules.confidence - 1, method="exact").high
    return bool(rules.min_score is not None and high < rules.min_score)


def judge_kind(kind: Kind, baseline: Sequence[ItemResult], candidate: Sequence[ItemResult], rules: Rules,
               quarantined: AbstractSet[tuple[str, str]] = frozenset()) -> KindJudgement:
    """Pair the two sides' items of one kind and decide."""
    errors = [_error_share(baseline), _error_share(candidate)]
    if max(errors) > MAX_ERROR_SHARE:
        return KindJudgement(kind, Phase.ERROR, f"{max(errors):.0%} of items errored: the measurement broke")
    base = {r.item_id: r for r in baseline if r.error_kind is None}
    cand = {r.item_id: r for r in candidate if r.error_kind is None}
    shared = sorted(set(base) & set(cand))
    held_out = [i for i in shared if (i, kind) in quarantined]
    ids = [i for i in shared if (i, kind) not in quarantined]
    excluded = len({r.item_id for r in (*baseline, *candidate)}) - len(shared)
    if len(ids) < rules.min_items:
        return KindJudgement(kind, Phase.INCONCLUSIVE, f"only {len(ids)} paired items (min_items "
                             f"{rules.min_items})", excluded=excluded, quarantined=len(held_out))
    if Kind(kind).binary:
        result = paired_binary([bool(base[i].correct) for i in ids], [bool(cand[i].correct) for i in ids],
                               rules.confidence)
        phase, reason = decide(result, rules)
    else:
        result = paired_continuous([base[i].score or 0.0 for i in ids], [cand[i].score or 0.0 for i in ids],
                                   rules.confidence)
        phase, reason = decide(result, rules, unit=units.NATS)
    margin = _margin(kind, base, cand, ids, rules)
    return KindJudgement(kind, phase, reason, result, margin, excluded, len(held_out))


def _margin(kind: str, base: dict[str, ItemResult], cand: dict[str, ItemResult], ids: list[str],
            rules: Rules) -> PairedResult | None:
    """For multiple choice: how far the right answer's log-likelihood lead moved (evidence only)."""
    if kind != Kind.MULTIPLE_CHOICE:
        return None
    return paired_continuous([base[i].margin or 0.0 for i in ids], [cand[i].margin or 0.0 for i in ids],
                             rules.confidence)


def _error_share(results: Sequence[ItemResult]) -> float:
    return sum(r.error_kind is not None for r in results) / len(results) if results else 1.0


def diagnose(kinds: Sequence[KindJudgement]) -> tuple[Diagnosis, str]:
    """Knowledge vs alignment, from the two kinds measured on the same items."""
    by_kind = {k.kind: k for k in kinds}
    mc, gen = by_kind.get(Kind.MULTIPLE_CHOICE), by_kind.get(Kind.GENERATE_UNTIL)
    if mc is None or gen is None or mc.result is None or gen.result is None:
        if any(Phase(k.phase).bad for k in kinds):
            return Diagnosis.UNDIAGNOSED, "measured one way only"
        return Diagnosis.NONE, ""
    generation = units.drop_text(Kind.GENERATE_UNTIL, gen.result.drop)
    choice = units.drop_text(Kind.MULTIPLE_CHOICE, mc.result.drop)
    numbers = (f"generation drop {generation} ({gen.phase}), multiple-choice drop {choice} "
               f"({mc.phase}) on the same {gen.result.n} items")
    if Phase(mc.phase).bad:
        return Diagnosis.KNOWLEDGE_LOSS, f"the model no longer knows: {numbers}"
    if Phase(gen.phase).bad and mc.phase in (Phase.PASS, Phase.INCONCLUSIVE):
        return Diagnosis.ALIGNMENT_LOSS, f"the model still knows but stopped using it: {numbers}"
    return Diagnosis.NONE, numbers


def judge_runs(suite: Suite, rules: Rules, baseline: Sequence[tuple[Run, list[ItemResult]]],
               candidate: Sequence[tuple[Run, list[ItemResult]]],
               quarantined: AbstractSet[tuple[str, str]] = frozenset()) -> Judgement:
    """Judge one suite from already-loaded runs (the latest run on each side decides)."""
    broken = [run for run, _ in (*baseline, *candidate) if run.status != RunStatus.COMPLETE]
    ids = ([r.id for r, _ in candidate if r.id], [r.id for r, _ in baseline if r.id])
    if broken:
        reason = f"run {broken[0].id} of {broken[0].version} is {broken[0].status}: {broken[0].error or ''}"
        kinds = [KindJudgement(k, Phase.ERROR, reason) for k in suite.kinds]
        return Judgement(suite.name, suite.capability, Phase.ERROR, Diagnosis.NONE, reason, kinds, rules,
                         *ids)
    kinds = [judge_kind(kind, _of(baseline, kind), _of(candidate, kind), rules, quarantined)
             for kind in suite.kinds]
    worst = max(kinds, key=lambda k: k.phase.severity)
    diagnosis, why = diagnose(kinds)
    reason = f"{worst.kind}: {worst.reason}" + (f"; {why}" if why else "")
    return Judgement(suite.name, suite.capability, worst.phase, diagnosis, reason, kinds, rules, *ids)


def _of(runs: Sequence[tuple[Run, list[ItemResult]]], kind: str) -> list[ItemResult]:
    """The kind's results from the newest run that measured it."""
    for _, results in reversed(runs):
        chosen = [r for r in results if r.kind == kind]
        if chosen:
            return chosen
    return []
