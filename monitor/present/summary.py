"""What a verdict means for whoever is on call: what happened, why, what to do, and the command.

Said once, here, and shown the same everywhere a person meets a verdict: its page, the API's
verdict JSON (`summary`) and the annotations of the alert the ladder pushes. The advice follows
the diagnosis and the policy's ladder, never the phase alone: alignment loss is retrained (the
model still knows), knowledge loss is rolled back, an ERROR is fixed on the serving side and
never rolled back, and a capability with fewer probe items than `min_items` is called
unmonitored, since it can never PASS or FAIL. Numbers go through `monitor.units`.

    >>> summary = summarize(facts)                          # doctest: +SKIP
    >>> summary.steps[0].command                            # doctest: +SKIP
    'forgetmenot approve 12'
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from monitor import units
from monitor.metrics.rules import alert_for
from monitor.policy.schema import Guards, Rules
from monitor.present import advice
from monitor.present.advice import Step
from monitor.store import Action, Verdict, VerdictKind
from monitor.store.runs import RunErrors
from monitor.vocabulary import MOVES, ActionStatus, Diagnosis, Kind, Phase, Witnesses

KIND_WORDS: Mapping[str, str] = {Kind.MULTIPLE_CHOICE: "multiple choice (knows)",
                                 Kind.GENERATE_UNTIL: "generated answers (uses it)",
                                 Kind.LOGLIKELIHOOD_ROLLING: "fluency"}

MEANINGS: Mapping[str, str] = {
    Diagnosis.ALIGNMENT_LOSS: "alignment loss: it still knows (multiple choice held) but stopped using it "
                              "in its answers",
    Diagnosis.KNOWLEDGE_LOSS: "knowledge loss: both kinds dropped, the knowledge left the weights",
    Diagnosis.UNDIAGNOSED: "measured one way only, so knowledge and alignment loss cannot be told apart"}


@dataclass(frozen=True)
class Facts:
    """What a summary is made from; `monitor.present.facts` gathers them from the store."""

    verdict: Verdict
    kinds: Sequence[VerdictKind]
    rules: Rules  # as judged
    guards: Guards
    live: str  # the model's live version now
    actions: Sequence[Action]  # what the ladder did about this failure, oldest first
    errors: Sequence[RunErrors]  # the verdict's runs that did not measure every item
    endpoint: str | None  # where the model is served, redacted; None: not known
    probe_items: int | None  # the suite's probe items; None: the suite is not at hand
    runbook_base: str


@dataclass(frozen=True)
class RunCause:
    """One run that broke (`/api/v1/runs/{run}`): failed item measurements per error kind, and
    its first error message."""

    run: int
    version: str
    status: str
    errors: dict[str, int]
    first: str | None


@dataclass(frozen=True)
class Cause:
    """Why the measurement broke: each run that did, and where the model is served."""

    runs: tuple[RunCause, ...]
    endpoint: str | None

    @property
    def first(self) -> str | None:
        said = [run.first for run in self.runs if run.first]
        return said[0] if said else None


@dataclass(frozen=True)
class Summary:
    happened: str
    why: str
    todo: str  # the advice in one sentence; `steps` are its commands
    steps: tuple[Step, ...]
    fallback: Step | None  # the ladder's next resort, labelled as such; never the advice
    ladder: tuple[str, ...]  # what the ladder did about this failure, or will do
    banner: str | None  # set when it must not be missed: a critical capability in trouble
    runbook: str | None  # the runbook of the alert this verdict raises
    cause: Cause | None  # an ERROR's

    @property
    def command(self) -> str | None:
        """The first command to run, if any."""
        typed = [step.command for step in self.steps if step.command]
        return typed[0] if typed else None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "command": self.command}


def summarize(facts: Facts) -> Summary:
    phase = facts.verdict.phase
    if phase == Phase.ERROR:
        return _broken(facts)
    if phase == Phase.INCONCLUSIVE:
        return _inconclusive(facts)
    if phase in (Phase.FAIL, Phase.MARGINAL):
        return _dropped(facts)
    return _held(facts)


def unmonitored(facts: Facts) -> bool:
    """Fewer probe items than `min_items`: no measurement of this suite can ever be judged."""
    return facts.probe_items is not None and facts.probe_items < facts.rules.min_items


def figures(kinds: Sequence[VerdictKind], confidence: float) -> str:
    """Each measured kind: baseline → candidate, and the drop with its bounds."""
    parts = [_figure(k, confidence) for k in kinds if k.drop is not None]
    return "; ".join(parts)


def _figure(k: VerdictKind, confidence: float) -> str:
    scores = f"{units.score_text(k.kind, k.baseline_score)} → {units.score_text(k.kind, k.candidate_score)}"
    bounds = units.bounds_text(k.kind, k.low, k.high)
    label = KIND_WORDS.get(k.kind, k.kind)
    return f"{label} {scores}, drop {units.drop_text(k.kind, k.drop)} ({confidence:.0%} bounds {bounds})"


def _dropped(facts: Facts) -> Summary:
    v = facts.verdict
    ladder = _ladder(facts)
    fallback = None
    if v.muted:
        steps, todo = advice.muted(v), advice.MUTED
    elif v.phase == Phase.MARGINAL:
        steps, todo = advice.marginal(v), advice.MARGINAL
    elif v.diagnosis == Diagnosis.KNOWLEDGE_LOSS:
        steps, todo = advice.knowledge(v, facts.live, facts.actions, ladder), advice.ROLL_BACK
    else:
        steps, todo = advice.alignment(v, facts.rules, facts.actions, ladder)
        fallback = advice.fallback(v, facts.live, ladder)
    return Summary(_happened(v), _why(facts), todo, steps, fallback, _ladder_lines(facts, ladder),
                   _banner(facts), _runbook(facts), None)


def _happened(v: Verdict) -> str:
    said = _meaning(v)
    outcome = f"{v.model} {v.candidate} {v.phase} on {v.capability} against {v.baseline}"
    return f"{outcome}: {said}." if said else f"{outcome}."


# Where re-elicitation was the diagnosis's one witness (the suite measures no multiple choice).
REELICITED_MEANINGS: Mapping[str, str] = {
    Diagnosis.ALIGNMENT_LOSS: "alignment loss: asked again with a reminder, it does it again (in full or "
                              "a real part of it), so it still can but stopped doing it",
    Diagnosis.UNDIAGNOSED: "undiagnosed: even asked again with a reminder it does not do it, and nothing "
                           "measured whether it still knows how"}
WITNESS_WORDS: Mapping[str, str] = {
    Witnesses.AGREE: "confirmed by two witnesses, multiple choice and re-elicitation",
    Witnesses.DISAGREE: "but the two witnesses disagree (multiple choice and re-elicitation): read the "
                        "regressed items before acting"}


def _meaning(v: Verdict) -> str | None:
    """The diagnosis in words (None for one a newer forgetmenot wrote), with its witnesses."""
    again = json.loads(v.reelicited) if v.reelicited else {}
    alone = v.witnesses == Witnesses.ONE and again.get("drop") is not None
    said = REELICITED_MEANINGS.get(v.diagnosis) if alone else MEANINGS.get(v.diagnosis)
    heard = WITNESS_WORDS.get(v.witnesses or "")
    if said and heard:
        return f"{said}; {heard}"
    return said


def _why(facts: Facts) -> str:
    """Each kind's figures, then the tolerance the deciding kind was held to."""
    measured = figures(facts.kinds, facts.rules.confidence)
    headline = _headline(facts.kinds)
    if not measured or headline is None:
        return facts.verdict.reason
    limit = _tolerance(headline.kind, facts.rules)
    return f"{measured}{_reelicited(facts.verdict)}; tolerance {units.tolerance_text(headline.kind, limit)}."


def _reelicited(v: Verdict) -> str:
    """The second witness's figures, where it was measured: generation asked again, reminded."""
    again = json.loads(v.reelicited) if v.reelicited else {}
    if again.get("drop") is None:
        return ""
    kind = Kind.GENERATE_UNTIL
    scores = (f"{units.score_text(kind, again.get('baseline_score'))} → "
              f"{units.score_text(kind, again.get('candidate_score'))}")
    drop = units.drop_text(kind, again["drop"])
    return f"; re-elicited generation {scores}, drop {drop} ({again.get('phase')})"


def _headline(kinds: Sequence[VerdictKind]) -> VerdictKind | None:
    """The kind that decided the phase: the worst, the first of equals (as the judge picks)."""
    known = [k for k in kinds if k.phase in set(Phase)]
    return max(known, key=lambda k: Phase(k.phase).severity, default=None)


def _tolerance(kind: str, rules: Rules) -> float:
    return rules.max_drop if units.is_accuracy(kind) else rules.max_drop_nats


def _ladder(facts: Facts) -> tuple[str, ...]:
    """The steps the policy climbs for this diagnosis (the same choice as the ladder's triggers)."""
    knowledge = facts.verdict.diagnosis == Diagnosis.KNOWLEDGE_LOSS
    steps = facts.rules.on_knowledge_loss if knowledge else facts.rules.on_alignment_loss
    return tuple(steps)


def _ladder_lines(facts: Facts, ladder: tuple[str, ...]) -> tuple[str, ...]:
    """Each action the ladder took about this failure, then the steps it has still to take."""
    if facts.verdict.muted:
        return ("muted: the ladder never acts on this capability",)
    if facts.verdict.phase == Phase.ERROR:
        return ("the ladder never acts on an ERROR: nothing is rolled back or retrained",)
    if facts.verdict.phase != Phase.FAIL:
        return ("the ladder acts only on FAIL",)
    done = [advice.action_line(a) for a in facts.actions]
    taken = {a.kind for a in facts.actions}
    remaining = [step for step in ladder if step not in taken]
    if remaining and not _moved(facts.actions):
        done.append(advice.planned(remaining, facts.rules, facts.guards, started=bool(taken)))
    if facts.guards.dry_run:
        done.append("dry run: nothing moved (policy.guards.dry_run)")
    return tuple(done)


def _moved(actions: Sequence[Action]) -> bool:
    """Live moved: the ladder's later steps were about the old version and will not run."""
    return any(a.kind in MOVES and a.status == ActionStatus.DONE for a in actions)


def _banner(facts: Facts) -> str | None:
    v = facts.verdict
    if not v.critical:
        return None
    if unmonitored(facts):
        return (f"Critical capability {v.capability} is unmonitored: {facts.probe_items} probe items, needs "
                f"{facts.rules.min_items}. It can never PASS or FAIL, so no breach alert can fire for it.")
    if v.phase in (Phase.FAIL, Phase.MARGINAL, Phase.ERROR):
        return f"Critical capability {v.capability}: {v.phase}."
    return None


def _runbook(facts: Facts) -> str | None:
    alert = alert_for(facts.verdict.phase, facts.verdict.critical)
    return alert.runbook_url(facts.runbook_base) if alert else None


def _held(facts: Facts) -> Summary:
    v = facts.verdict
    steps = (Step(f"Nothing: the verdict is {v.phase}."),)
    return Summary(_happened(v), _why(facts), "Nothing to do.", steps, None, _ladder_lines(facts, ()),
                   None, _runbook(facts), None)


def _inconclusive(facts: Facts) -> Summary:
    v = facts.verdict
    reasons = "; ".join(f"{k.kind}: {k.reason}" for k in facts.kinds) or v.reason
    if unmonitored(facts):
        needed = f"{facts.probe_items} probe items, needs {facts.rules.min_items}"
        happened = f"{v.capability} is unmonitored: {needed} (min_items), so it can never PASS or FAIL."
        steps = advice.too_few(v, facts.probe_items or 0, facts.rules.min_items)
        todo = "Give the suite enough probe items, or the capability stays unwatched."
    else:
        happened = f"{v.model} {v.candidate} INCONCLUSIVE on {v.capability}: not enough evidence either way."
        steps = advice.wait(v, facts.rules)
        todo = "Wait for more measurements, and look at the items meanwhile."
    measured = figures(facts.kinds, facts.rules.confidence)
    why = f"{reasons}; {measured}" if measured else reasons
    return Summary(happened, why, todo, steps, None, _ladder_lines(facts, ()), _banner(facts),
                   _runbook(facts), None)


def _broken(facts: Facts) -> Summary:
    v = facts.verdict
    cause = _cause(facts)
    counted = "; ".join(_counted(run) for run in cause.runs) or "no item errors"
    happened = (f"The measurement of {v.model} broke ({counted}): this says nothing about forgetting, "
                "and nothing is rolled back.")
    why = v.reason
    if cause.first and cause.first not in why:
        why += f"; first error: {cause.first}"
    steps = advice.broken(v, facts.errors, cause.endpoint)
    todo = "Fix the serving side, then measure again."
    return Summary(happened, why, todo, steps, None, _ladder_lines(facts, ()), _banner(facts),
                   _runbook(facts), cause)


def _cause(facts: Facts) -> Cause:
    runs = tuple(RunCause(found.run.id or 0, found.run.version, found.run.status, dict(found.kinds),
                          found.first) for found in facts.errors)
    return Cause(runs, facts.endpoint)


def _counted(run: RunCause) -> str:
    """`run 9 of base: unreachable 156`."""
    errors = ", ".join(f"{kind} {count}" for kind, count in run.errors.items()) or run.status
    return f"run {run.run} of {run.version}: {errors}"
