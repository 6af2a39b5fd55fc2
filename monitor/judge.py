"""Turn runs into verdicts: paired comparison, policy phases, knowledge-vs-alignment diagnosis.

A verdict compares a candidate version with the baseline on one suite, item by item, on exactly
the same suite content (same hash) and the same backend and dtype. Phases, per kind:

* PASS: confident the drop is within `max_drop` (the drop's upper bound is at most max_drop);
* FAIL: confident it exceeds `max_drop` (lower bound above it), or the candidate is confidently
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

from monitor.config import Rules
from monitor.errors import ForgetmenotError
from monitor.stats import PairedResult, paired_binary, paired_continuous
from monitor.store import ItemResult, Run, Store, Verdict, VerdictKind
from monitor.suites import Suite

PHASES = ("PASS", "MARGINAL", "FAIL", "INCONCLUSIVE", "ERROR")
_SEVERITY = {"PASS": 0, "INCONCLUSIVE": 1, "ERROR": 2, "MARGINAL": 3, "FAIL": 4}
MAX_ERROR_SHARE = 0.10
BINARY_KINDS = ("multiple_choice", "generate_until")


class JudgeError(ForgetmenotError):
    """The comparison asked for cannot be made (different content, no runs)."""


@dataclass(frozen=True)
class KindJudgement:
    kind: str
    phase: str
    reason: str
    result: PairedResult | None = None
    margin: PairedResult | None = None
    excluded: int = 0
    quarantined: int = 0


@dataclass(frozen=True)
class Judgement:
    suite: str
    capability: str
    phase: str
    diagnosis: str
    reason: str
    kinds: list[KindJudgement]
    rules: Rules
    candidate_runs: list[int] = field(default_factory=list)
    baseline_runs: list[int] = field(default_factory=list)

    def headline(self) -> KindJudgement | None:
        return max(self.kinds, key=lambda k: _SEVERITY[k.phase], default=None)


def decide(result: PairedResult, rules: Rules, unit: str = "pts") -> tuple[str, str]:
    """The phase of one paired result under one capability's rules, with the reason in words."""
    scale, digits = (100, 1) if unit == "pts" else (1, 3)
    tolerance = f"{rules.max_drop * scale:.{digits}f} {unit}"
    bounds = (f"{rules.confidence:.0%} bounds {result.low * scale:+.{digits}f} to "
              f"{result.high * scale:+.{digits}f}")
    drop = f"drop {result.drop * scale:+.{digits}f} {unit} ({bounds})"
    if rules.min_score is not None and unit == "pts" and _floor_broken(result, rules):
        return "FAIL", f"candidate {result.candidate:.1%} is below the floor {rules.min_score:.1%}"
    if result.low > rules.max_drop:
        return "FAIL", f"{drop} exceeds the tolerance {tolerance}"
    if result.high <= rules.max_drop:
        return "PASS", f"{drop} is within the tolerance {tolerance}"
    if result.drop > rules.max_drop:
        return "MARGINAL", f"{drop} is past the tolerance {tolerance}, not yet with {rules.confidence:.0%}"
    return "INCONCLUSIVE", f"{drop}: within the tolerance {tolerance} but not confidently"


def _floor_broken(result: PairedResult, rules: Rules) -> bool:
    from scipy.stats import binomtest

    correct = round(result.candidate * result.n)
    high = binomtest(correct, result.n).proportion_ci(2 * rules.confidence - 1, method="exact").high
    return bool(rules.min_score is not None and high < rules.min_score)


def judge_kind(kind: str, baseline: Sequence[ItemResult], candidate: Sequence[ItemResult], rules: Rules,
               quarantined: AbstractSet[tuple[str, str]] = frozenset()) -> KindJudgement:
    """Pair the two sides' items of one kind and decide."""
    errors = [_error_share(baseline), _error_share(candidate)]
    if max(errors) > MAX_ERROR_SHARE:
        return KindJudgement(kind, "ERROR", f"{max(errors):.0%} of items errored: the measurement broke")
    base = {r.item_id: r for r in baseline if r.error_kind is None}
    cand = {r.item_id: r for r in candidate if r.error_kind is None}
    shared = sorted(set(base) & set(cand))
    held_out = [i for i in shared if (i, kind) in quarantined]
    ids = [i for i in shared if (i, kind) not in quarantined]
    excluded = len({r.item_id for r in (*baseline, *candidate)}) - len(shared)
    if len(ids) < rules.min_items:
        return KindJudgement(kind, "INCONCLUSIVE", f"only {len(ids)} paired items (min_items "
                             f"{rules.min_items})", excluded=excluded, quarantined=len(held_out))
    if kind in BINARY_KINDS:
        result = paired_binary([bool(base[i].correct) for i in ids], [bool(cand[i].correct) for i in ids],
                               rules.confidence)
        phase, reason = decide(result, rules)
    else:
        result = paired_continuous([base[i].score or 0.0 for i in ids], [cand[i].score or 0.0 for i in ids],
                                   rules.confidence)
        phase, reason = decide(result, rules, unit="nats/token")
    margin = _margin(kind, base, cand, ids, rules)
    return KindJudgement(kind, phase, reason, result, margin, excluded, len(held_out))


def _margin(kind: str, base: dict[str, ItemResult], cand: dict[str, ItemResult], ids: list[str],
            rules: Rules) -> PairedResult | None:
    """For multiple choice: how far the right answer's log-likelihood lead moved (evidence only)."""
    if kind != "multiple_choice":
        return None
    return paired_continuous([base[i].margin or 0.0 for i in ids], [cand[i].margin or 0.0 for i in ids],
                             rules.confidence)


def _error_share(results: Sequence[ItemResult]) -> float:
    return sum(r.error_kind is not None for r in results) / len(results) if results else 1.0


def diagnose(kinds: Sequence[KindJudgement]) -> tuple[str, str]:
    """Knowledge vs alignment, from the two kinds measured on the same items."""
    by_kind = {k.kind: k for k in kinds}
    mc, gen = by_kind.get("multiple_choice"), by_kind.get("generate_until")
    bad = ("FAIL", "MARGINAL")
    if mc is None or gen is None or mc.result is None or gen.result is None:
        phases = {k.phase for k in kinds}
        return ("undiagnosed", "measured one way only") if phases & set(bad) else ("none", "")
    numbers = (f"generation {-gen.result.drop * 100:+.1f} pts ({gen.phase}), multiple-choice "
               f"{-mc.result.drop * 100:+.1f} pts ({mc.phase}) on the same {gen.result.n} items")
    if mc.phase in bad:
        return "knowledge_loss", f"the model no longer knows: {numbers}"
    if gen.phase in bad and mc.phase in ("PASS", "INCONCLUSIVE"):
        return "alignment_loss", f"the model still knows but stopped using it: {numbers}"
    return "none", numbers


def judge_runs(suite: Suite, rules: Rules, baseline: Sequence[tuple[Run, list[ItemResult]]],
               candidate: Sequence[tuple[Run, list[ItemResult]]],
               quarantined: AbstractSet[tuple[str, str]] = frozenset()) -> Judgement:
    """Judge one suite from already-loaded runs (the latest run on each side decides)."""
    broken = [run for run, _ in (*baseline, *candidate) if run.status != "complete"]
    ids = ([r.id for r, _ in candidate if r.id], [r.id for r, _ in baseline if r.id])
    if broken:
        reason = f"run {broken[0].id} of {broken[0].version} is {broken[0].status}: {broken[0].error or ''}"
        kinds = [KindJudgement(k, "ERROR", reason) for k in suite.kinds]
        return Judgement(suite.name, suite.capability, "ERROR", "none", reason, kinds, rules, *ids)
    kinds = [judge_kind(kind, _of(baseline, kind), _of(candidate, kind), rules, quarantined)
             for kind in suite.kinds]
    worst = max(kinds, key=lambda k: _SEVERITY[k.phase])
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


def judge_suite(store: Store, suite: Suite, rules: Rules, model: str, candidate: str,
                baseline: str) -> tuple[Judgement, Verdict]:
    """Judge the newest comparable runs of candidate and baseline on `suite`, and store the verdict."""
    base_run, cand_run = _latest_pair(store, suite, model, baseline, candidate)
    quarantined = store.flaky(model, suite.content_hash, [baseline, candidate])
    judgement = judge_runs(suite, rules, [(base_run, store.results(base_run.id or 0))],
                           [(cand_run, store.results(cand_run.id or 0))], quarantined)
    return judgement, save(store, judgement, model, candidate, baseline, suite.content_hash)


def _latest_pair(store: Store, suite: Suite, model: str, baseline: str, candidate: str) -> tuple[Run, Run]:
    def latest(version: str, back: int = 1) -> Run:
        same = store.finished_runs(model, version, suite.content_hash)
        if len(same) < back:
            raise JudgeError(f"no finished run of {model}/{version} on the current content of suite "
                             f"'{suite.name}' ({suite.content_hash[:12]}); run: forgetmenot probe "
                             f"--version {version} --suite {suite.name}")
        return same[-back]

    # A version judged against itself compares its two newest runs: the noise floor.
    base, cand = latest(baseline, 2 if baseline == candidate else 1), latest(candidate)
    if (base.backend, base.dtype) != (cand.backend, cand.dtype) and "unavailable" not in (
            base.backend, cand.backend):
        raise JudgeError(f"refusing to compare {baseline} measured on {base.backend}/{base.dtype} with "
                         f"{candidate} on {cand.backend}/{cand.dtype}: scores differ across backends")
    return base, cand


def save(store: Store, judgement: Judgement, model: str, candidate: str, baseline: str,
         content_hash: str) -> Verdict:
    head = judgement.headline()
    result = head.result if head else None
    verdict = Verdict(
        model=model, candidate=candidate, baseline=baseline, suite=judgement.suite,
        capability=judgement.capability, content_hash=content_hash, phase=judgement.phase,
        diagnosis=judgement.diagnosis, reason=judgement.reason, muted=judgement.rules.muted,
        critical=judgement.rules.critical,
        candidate_runs=",".join(map(str, judgement.candidate_runs)),
        baseline_runs=",".join(map(str, judgement.baseline_runs)),
        drop=result.drop if result else None, low=result.low if result else None,
        high=result.high if result else None, p_value=result.p_value if result else None)
    return store.save_verdict(verdict, [_kind_row(k) for k in judgement.kinds])


def _kind_row(k: KindJudgement) -> VerdictKind:
    r, m = k.result, k.margin
    return VerdictKind(
        kind=k.kind, phase=k.phase, reason=k.reason, method=r.method if r else "", n=r.n if r else 0,
        excluded=k.excluded, quarantined=k.quarantined, baseline_score=r.baseline if r else None,
        candidate_score=r.candidate if r else None, drop=r.drop if r else None, low=r.low if r else None,
        high=r.high if r else None, p_value=r.p_value if r else None, lost=r.lost if r else 0,
        gained=r.gained if r else 0, margin_drop=m.drop if m else None, margin_low=m.low if m else None,
        margin_high=m.high if m else None)


def overall(judgements: Sequence[Judgement]) -> str:
    """The model's phase: a critical capability's FAIL fails it; muted capabilities never count."""
    counted = [j for j in judgements if not j.rules.muted]
    if any(j.rules.critical and j.phase == "FAIL" for j in counted):
        return "FAIL"
    return max((j.phase for j in counted), key=_SEVERITY.__getitem__, default="INCONCLUSIVE")


def settle(phases: Sequence[str], rules: Rules) -> str:
    """What a capability's recent verdicts (oldest first) add up to, Argo-style, for acting on.

    ERRORs neither count for nor against forgetting: `consecutive_error_limit` trailing ERRORs
    settle as ERROR (probes broken, page the owner of the endpoint, never roll back). Otherwise the
    trailing FAILs, ERRORs skipped, must reach `failure_limit` (at least 1) to settle as FAIL, and
    more than `inconclusive_limit` trailing INCONCLUSIVEs settle as INCONCLUSIVE (a human decides).
    Anything short of those is PENDING; a PASS or MARGINAL stands as it is.
    """
    if not phases:
        return "PENDING"
    if _trailing(phases, "ERROR", skip=()) >= rules.consecutive_error_limit:
        return "ERROR"
    if _trailing(phases, "FAIL", skip=("ERROR",)) >= max(rules.failure_limit, 1):
        return "FAIL"
    if _trailing(phases, "INCONCLUSIVE", skip=("ERROR",)) > rules.inconclusive_limit:
        return "INCONCLUSIVE"
    latest = next((p for p in reversed(phases) if p != "ERROR"), "PENDING")
    return latest if latest in ("PASS", "MARGINAL") else "PENDING"


def _trailing(phases: Sequence[str], wanted: str, skip: tuple[str, ...]) -> int:
    count = 0
    for phase in reversed(phases):
        if phase in skip:
            continue
        if phase != wanted:
            break
        count += 1
    return count
