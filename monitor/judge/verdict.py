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
log-likelihood holds is *alignment loss*; both dropping is *knowledge loss*. A second witness,
re-elicitation (`Reelicited`), may be heard where generation dropped: it changes the diagnosis
and its reason, never a phase.
"""

from __future__ import annotations

from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from typing import Any

from monitor import units
from monitor.judge.stats import PairedResult, paired_binary, paired_continuous
from monitor.policy.schema import Rules
from monitor.policy.suites import Suite
from monitor.store import ItemResult, Run
from monitor.vocabulary import Diagnosis, Kind, Phase, RunStatus, Witnesses

MAX_ERROR_SHARE = 0.10
HELD = (Phase.PASS, Phase.INCONCLUSIVE)  # a drop within the tolerance, confidently or not
# Re-elicitation need not bring everything back to witness that the capability is still there:
# a third of the lost points returning, confidently, is what prompting alone cannot do for a
# capability the weights lost (on the safety scenario a safety system prompt and three of the
# baseline's refusals brought back half of it).
CAME_BACK_SHARE = 1 / 3


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
class Reelicited:
    """The diagnosis's second witness: the candidate asked the same probe items again, reminded of
    the behaviour (`monitor.probing.reelicit`), its generation judged against the baseline's plain
    generation by the same rules. `judgement` is None where it could not be measured (`note` says
    why). Heard only where generation dropped; it never changes a phase."""

    how: str
    judgement: KindJudgement | None = None
    run: int | None = None
    note: str = ""
    plain: PairedResult | None = None  # the candidate's plain generation against the baseline


    @property
    def measured(self) -> bool:
        """A paired result to go by: a broken or too small re-elicitation is no witness."""
        found = self.judgement
        return found is not None and found.result is not None and found.phase != Phase.ERROR

    @property
    def recovered(self) -> bool:
        """Back near the baseline (within the tolerance, as multiple choice 'held' is defined), or
        a real part of the loss back: at least `CAME_BACK_SHARE` of the points, with the
        re-elicited drop's upper bound below the plain drop's lower bound."""
        found = self.judgement
        if not self.measured or found is None or found.result is None:
            return False
        if found.phase in HELD:
            return True
        share = self.came_back()
        if share is None or self.plain is None:
            return False
        return share >= CAME_BACK_SHARE and found.result.high < self.plain.low

    def came_back(self) -> float | None:
        """The share of the plain drop that re-elicitation brought back (None where nothing dropped)."""
        found = self.judgement
        if found is None or found.result is None or self.plain is None or self.plain.drop <= 0:
            return None
        return (self.plain.drop - found.result.drop) / self.plain.drop

    def said(self) -> str:
        """The witness in words, for the diagnosis's reason."""
        found = self.judgement
        if found is None or found.result is None:
            why = self.note or (found.reason if found else "")
            return f"re-elicitation not measured: {why}"
        drop = units.drop_text(Kind.GENERATE_UNTIL, found.result.drop)
        share = self.came_back()
        back = f", {share:.0%} of the loss back" if share is not None and found.phase not in HELD else ""
        return f"re-elicited with {self.how}, generation drop {drop} ({found.phase}{back})"

    def to_json(self) -> dict[str, Any]:
        """As a verdict keeps it (and the API gives it): raw fractions, null where not measured."""
        found = self.judgement
        recovered = self.recovered if self.measured else None
        said: dict[str, Any] = {"phase": None, "reason": None}
        if found is not None:
            said = {"phase": found.phase, "reason": found.reason}
        figures: dict[str, Any] = {**dict.fromkeys(_FIGURES), "n": 0}
        if found is not None and found.result is not None:
            r = found.result
            figures = {"method": r.method, "n": r.n, "baseline_score": r.baseline,
                       "candidate_score": r.candidate, "drop": r.drop, "low": r.low, "high": r.high,
                       "p_value": r.p_value}
        heard = {"how": self.how, "run": self.run, "note": self.note, "recovered": recovered,
             "came_back": self.came_back()}
        return {**heard, **said, **figures}


_FIGURES = ("method", "baseline_score", "candidate_score", "drop", "low", "high", "p_value")


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
    reelicited: Reelicited | None = None
    witnesses: Witnesses | None = None  # None where nothing dropped, so nothing was diagnosed

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


def diagnose(kinds: Sequence[KindJudgement], reelicited: Reelicited | None = None) -> tuple[Diagnosis, str]:
    """Knowledge vs alignment, from the two kinds measured on the same items, and the second
    witness where generation dropped and it was heard."""
    diagnosis, why, _ = _diagnosed(kinds, _beside_plain(reelicited, kinds))
    return diagnosis, why


def needs_witness(judgement: Judgement) -> bool:
    """Generation dropped: the one case re-elicitation is measured for."""
    return any(k.kind == Kind.GENERATE_UNTIL and Phase(k.phase).bad for k in judgement.kinds)


def _diagnosed(kinds: Sequence[KindJudgement],
               reelicited: Reelicited | None) -> tuple[Diagnosis, str, Witnesses | None]:
    by_kind = {k.kind: k for k in kinds}
    mc, gen = by_kind.get(Kind.MULTIPLE_CHOICE), by_kind.get(Kind.GENERATE_UNTIL)
    dropped = gen is not None and gen.result is not None and Phase(gen.phase).bad
    if reelicited is not None and reelicited.measured and dropped:
        assert gen is not None
        return _two_witnesses(mc, gen, reelicited)
    diagnosis, why = _by_choice(kinds, mc, gen)
    if reelicited is not None and dropped:
        why = f"{why}; {reelicited.said()}"
    return diagnosis, why, _alone(diagnosis)


def _by_choice(kinds: Sequence[KindJudgement], mc: KindJudgement | None,
               gen: KindJudgement | None) -> tuple[Diagnosis, str]:
    """The first witness alone: multiple choice held or dropped on the items generation dropped on."""
    if mc is None or gen is None or mc.result is None or gen.result is None:
        if any(Phase(k.phase).bad for k in kinds):
            return Diagnosis.UNDIAGNOSED, "measured one way only"
        return Diagnosis.NONE, ""
    numbers = _numbers(mc, gen)
    if Phase(mc.phase).bad:
        return Diagnosis.KNOWLEDGE_LOSS, f"the model no longer knows: {numbers}"
    if Phase(gen.phase).bad and mc.phase in HELD:
        return Diagnosis.ALIGNMENT_LOSS, f"the model still knows but stopped using it: {numbers}"
    return Diagnosis.NONE, numbers


def _numbers(mc: KindJudgement, gen: KindJudgement) -> str:
    assert mc.result is not None and gen.result is not None
    generation = units.drop_text(Kind.GENERATE_UNTIL, gen.result.drop)
    choice = units.drop_text(Kind.MULTIPLE_CHOICE, mc.result.drop)
    return (f"generation drop {generation} ({gen.phase}), multiple-choice drop {choice} "
            f"({mc.phase}) on the same {gen.result.n} items")


def _alone(diagnosis: Diagnosis) -> Witnesses | None:
    if diagnosis == Diagnosis.NONE:
        return None
    if diagnosis == Diagnosis.UNDIAGNOSED:
        return Witnesses.NONE
    return Witnesses.ONE


def _two_witnesses(mc: KindJudgement | None, gen: KindJudgement,
                   reelicited: Reelicited) -> tuple[Diagnosis, str, Witnesses]:
    """Generation dropped and re-elicitation was measured. Multiple choice dropping still says
    knowledge loss (the likelihoods are the more direct evidence); where it held, or was not
    measured, re-elicitation decides whether the capability is still there to be used."""
    again = reelicited.said()
    back = reelicited.recovered
    if mc is not None and mc.result is not None:
        numbers = _numbers(mc, gen)
        if Phase(mc.phase).bad and back:
            return (Diagnosis.KNOWLEDGE_LOSS, f"the model no longer knows: {numbers}; but {again}: "
                    "reminded, it does it again, so the witnesses disagree", Witnesses.DISAGREE)
        if Phase(mc.phase).bad:
            return (Diagnosis.KNOWLEDGE_LOSS, f"the model no longer knows: {numbers}; {again}: "
                    "reminded, it does not do it again either", Witnesses.AGREE)
        if mc.phase in HELD and back:
            return (Diagnosis.ALIGNMENT_LOSS, "the model still knows but stopped using it, confirmed by "
                    f"two witnesses: {numbers}; {again}: reminded, it does it again", Witnesses.AGREE)
        if mc.phase in HELD:
            return (Diagnosis.ALIGNMENT_LOSS, f"the model still knows but stopped using it: {numbers}; "
                    f"but {again}: re-elicitation did not bring it back, so the witnesses disagree",
                    Witnesses.DISAGREE)
    assert gen.result is not None
    generation = (f"generation drop {units.drop_text(Kind.GENERATE_UNTIL, gen.result.drop)} "
                  f"({gen.phase}) on {gen.result.n} items")
    if back:
        return (Diagnosis.ALIGNMENT_LOSS, f"the model stopped using what it still can do: {generation}; "
                f"{again}: reminded, it does it again", Witnesses.ONE)
    # Not brought back, and nothing says whether it is still known: a rollback on this alone
    # would undo a fine-tune that retraining might have fixed, so the policy's default ladder
    # for what cannot be told apart applies.
    return (Diagnosis.UNDIAGNOSED, f"even re-elicited the model does not do it: {generation}; {again}; "
            "with no multiple choice to show whether it is still known, knowledge and alignment loss "
            "cannot be told apart", Witnesses.ONE)


def judge_runs(suite: Suite, rules: Rules, baseline: Sequence[tuple[Run, list[ItemResult]]],
               candidate: Sequence[tuple[Run, list[ItemResult]]],
               quarantined: AbstractSet[tuple[str, str]] = frozenset(),
               reelicited: Reelicited | None = None) -> Judgement:
    """Judge one suite from already-loaded runs (the latest run on each side decides), with the
    second witness where one was heard."""
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
    reelicited = _beside_plain(reelicited, kinds)
    diagnosis, why, witnesses = _diagnosed(kinds, reelicited)
    reason = f"{worst.kind}: {worst.reason}" + (f"; {why}" if why else "")
    return Judgement(suite.name, suite.capability, worst.phase, diagnosis, reason, kinds, rules, *ids,
                     reelicited=reelicited, witnesses=witnesses)


def _beside_plain(reelicited: Reelicited | None, kinds: Sequence[KindJudgement]) -> Reelicited | None:
    """The witness with the plain generation it is to be read against (how much came back)."""
    plain = [k.result for k in kinds if k.kind == Kind.GENERATE_UNTIL]
    if reelicited is None or not plain:
        return reelicited
    return replace(reelicited, plain=plain[0])


def _of(runs: Sequence[tuple[Run, list[ItemResult]]], kind: str) -> list[ItemResult]:
    """The kind's results from the newest run that measured it."""
    for _, results in reversed(runs):
        chosen = [r for r in results if r.kind == kind]
        if chosen:
            return chosen
    return []
