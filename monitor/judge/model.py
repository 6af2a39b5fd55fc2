"""Judging a model version against its baseline from the store, and keeping the verdicts.

`judge_model` is the one loop over suites that the CLI, the service, the full-loop demo and
recovery retraining's gate all use. Each verdict carries the rules it was judged by, so a later
edit of the policy file cannot change what an old verdict meant (nor what is done about it).

Where a `Reelicitor` is given (a backend can be loaded there) and generation dropped, the
diagnosis's second witness is measured *before* the verdict is stored: a verdict is stored once
per measurement, and the re-elicited run is part of what it measured.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from monitor.errors import JudgeError
from monitor.judge.settle import overall
from monitor.judge.verdict import Judgement, KindJudgement, Reelicited, judge_kind, judge_runs, needs_witness
from monitor.policy.schema import Config, Rules
from monitor.policy.suites import Suite
from monitor.probing.reelicit import Reelicitation, Reelicitor
from monitor.store import ItemResult, Run, Store, Verdict, VerdictKind
from monitor.store.verdicts import measurement_of
from monitor.vocabulary import Kind, Phase, RunStatus


@dataclass(frozen=True)
class Judged:
    judgement: Judgement
    verdict: Verdict


@dataclass
class ModelJudgement:
    """Every suite's verdict on one candidate, and the suites that could not be judged (no
    comparable runs yet), with why."""

    model: str
    candidate: str
    baseline: str
    judged: list[Judged] = field(default_factory=list)
    missing: list[tuple[Suite, JudgeError]] = field(default_factory=list)

    @property
    def phase(self) -> Phase:
        return overall([j.judgement for j in self.judged])

    def verdicts(self) -> list[Verdict]:
        return [j.verdict for j in self.judged]


def judge_model(store: Store, config: Config, suites: Sequence[Suite], model: str,
                candidate: str | None = None, baseline: str | None = None,
                on_verdict: Callable[[Verdict], None] | None = None,
                reelicit: Reelicitor | None = None) -> ModelJudgement:
    """Judge `candidate` (default: live) against `baseline` (default: the policy's) on each suite;
    with `reelicit`, failing generation is asked again first (the diagnosis's second witness)."""
    cand = candidate or store.live_version(config, model)
    base = baseline or config.models[model].baseline
    out = ModelJudgement(model, cand, base)
    for suite in suites:
        try:
            judgement, verdict = judge_suite(store, suite, config.policy.rules_for(suite.capability),
                                             model, cand, base, reelicit)
        except JudgeError as exc:
            out.missing.append((suite, exc))
            continue
        if on_verdict is not None:
            on_verdict(verdict)
        out.judged.append(Judged(judgement, verdict))
    return out


def verdict_rules(verdict: Verdict, config: Config) -> Rules:
    """The rules a verdict was judged by; the current policy's for a verdict stored before
    verdicts carried them."""
    if verdict.rules:
        return Rules.model_validate_json(verdict.rules)
    return config.policy.rules_for(verdict.capability)


def judge_suite(store: Store, suite: Suite, rules: Rules, model: str, candidate: str, baseline: str,
                reelicit: Reelicitor | None = None) -> tuple[Judgement, Verdict]:
    """Judge the newest comparable runs of candidate and baseline on `suite`, and store the verdict
    (for runs judged by these rules before, the verdict stored then). With `reelicit`, a suite
    whose generation dropped is re-elicited on the candidate first (or a re-elicited run measured
    since its plain run is reused) and the verdict carries that second witness."""
    base_run, cand_run = _latest_pair(store, suite, model, baseline, candidate)
    judgement = judge_pair(store, suite, rules, model, (base_run, cand_run), reelicit)
    return judgement, save(store, judgement, model, candidate, baseline, suite.content_hash)


def judge_pair(store: Store, suite: Suite, rules: Rules, model: str, runs: tuple[Run, Run],
               reelicit: Reelicitor | None = None) -> Judgement:
    """Judge the candidate's run against the baseline's (`runs`, in that order) without storing a
    verdict, the second witness heard as `judge_suite` hears it: the demo's conclusions are this,
    so what it prints is what the monitor would store."""
    base_run, cand_run = runs
    baseline, candidate = base_run.version, cand_run.version
    quarantined = store.flaky(model, suite.content_hash, [baseline, candidate])
    base = [(base_run, store.results(base_run.id or 0))]
    cand = [(cand_run, store.results(cand_run.id or 0))]
    judgement = judge_runs(suite, rules, base, cand, quarantined)
    if not needs_witness(judgement):
        return judgement
    measured = _heard(store, suite, judgement, model, candidate, baseline, cand_run, reelicit)
    if measured is None:
        return judgement
    witness = _witness(store, measured, base[0][1], rules, quarantined)
    return judge_runs(suite, rules, base, cand, quarantined, witness)


def _heard(store: Store, suite: Suite, judgement: Judgement, model: str, candidate: str, baseline: str,
           cand_run: Run, reelicit: Reelicitor | None) -> Reelicitation | None:
    """The second witness: measured now where a backend is at hand; else the one a verdict on these
    same runs heard before (a `forgetmenot judge` after a serve cycle then returns that verdict,
    instead of storing one without it); None where neither is there."""
    if reelicit is not None:
        return reelicit.measure(store, suite, model, candidate, baseline, cand_run)
    runs = (",".join(map(str, judgement.candidate_runs)), ",".join(map(str, judgement.baseline_runs)))
    rules = judgement.rules.model_dump_json()
    for verdict in reversed(store.verdicts(model=model, candidate=candidate, baseline=baseline,
                                           suite=suite.name, content_hash=suite.content_hash, newest=20)):
        same = (verdict.candidate_runs, verdict.baseline_runs) == runs and verdict.rules == rules
        stored = json.loads(verdict.reelicited) if same and verdict.reelicited else {}
        run = store.get_run(stored["run"]) if stored.get("run") else None
        if run is not None:
            return Reelicitation(stored.get("how", ""), run)
    return None


def _witness(store: Store, measured: Reelicitation, baseline: list[ItemResult], rules: Rules,
             quarantined: AbstractSet[tuple[str, str]]) -> Reelicited:
    """The re-elicited run judged as its suite's generation is: against the baseline's plain
    generation on the same probe items, by the same rules, with the same items quarantined."""
    how, run = measured.how, measured.run
    if run is None:
        return Reelicited(how, note=measured.note)
    if run.status != RunStatus.COMPLETE:
        why = f"run {run.id} is {run.status}: {run.error or ''}"
        broken = KindJudgement(Kind.GENERATE_UNTIL, Phase.ERROR, why)
        return Reelicited(how, broken, run.id)
    plain = [r for r in baseline if r.kind == Kind.GENERATE_UNTIL]
    again = store.results(run.id or 0, Kind.GENERATE_UNTIL)
    return Reelicited(how, judge_kind(Kind.GENERATE_UNTIL, plain, again, rules, quarantined), run.id)


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
    """Store the judgement as a verdict; the runs and rules judged already have theirs, which is
    returned instead of a second row."""
    head = judgement.headline()
    result = head.result if head else None
    rules = judgement.rules.model_dump_json()
    candidate_runs = ",".join(map(str, judgement.candidate_runs))
    baseline_runs = ",".join(map(str, judgement.baseline_runs))
    witness = judgement.reelicited
    witness_run = str(witness.run) if witness is not None and witness.run is not None else ""
    reelicited = json.dumps(witness.to_json()) if witness is not None else None
    measurement = measurement_of(candidate_runs, baseline_runs, rules, witness_run)
    verdict = Verdict(
        model=model, candidate=candidate, baseline=baseline, suite=judgement.suite,
        capability=judgement.capability, content_hash=content_hash, phase=judgement.phase,
        diagnosis=judgement.diagnosis, reason=judgement.reason, muted=judgement.rules.muted,
        critical=judgement.rules.critical, rules=rules, candidate_runs=candidate_runs,
        baseline_runs=baseline_runs, measurement=measurement, witnesses=judgement.witnesses,
        reelicited=reelicited,
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
