"""From single verdicts to what to act on: a model's overall phase, and a capability's history
settled over time, Argo-style."""

from __future__ import annotations

from collections.abc import Sequence

from monitor.judge.verdict import Judgement
from monitor.policy.schema import Rules
from monitor.store import Verdict
from monitor.vocabulary import Phase


def overall(judgements: Sequence[Judgement]) -> Phase:
    """The model's phase: a critical capability's FAIL fails it; muted capabilities never count."""
    counted = [j for j in judgements if not j.rules.muted]
    if any(j.rules.critical and j.phase == Phase.FAIL for j in counted):
        return Phase.FAIL
    return Phase.worst(j.phase for j in counted)


def measured(history: Sequence[Verdict]) -> list[Verdict]:
    """A capability's verdicts (oldest first) cut to one per measurement of the candidate: the
    newest verdict on each candidate run, in the order of those. A run judged again (against a
    newer run of the baseline, as `serve` does after the baseline's job, or stored twice before
    verdicts had an identity) is still one measurement. A verdict that names no candidate run
    stands for itself."""
    newest: dict[str, Verdict] = {}
    for verdict in history:
        key = verdict.candidate_runs or f"verdict {verdict.id}"
        newest.pop(key, None)  # moved to the end: ordered by its newest judging
        newest[key] = verdict
    return list(newest.values())


def settle(phases: Sequence[str], rules: Rules) -> Phase | None:
    """What a capability's recent measurements (one phase each, oldest first; see `measured`) add
    up to, for acting on; None while they add up to nothing yet.

    ERRORs neither count for nor against forgetting: `consecutive_error_limit` trailing ERRORs
    settle as ERROR (probes broken, page the owner of the endpoint, never roll back). Otherwise the
    trailing FAILs, ERRORs skipped, must reach `failure_limit` (at least 1) to settle as FAIL, and
    more than `inconclusive_limit` trailing INCONCLUSIVEs settle as INCONCLUSIVE (a human decides).
    Anything short of those settles nothing; a PASS or MARGINAL stands as it is.
    """
    if _trailing(phases, Phase.ERROR, skip=()) >= rules.consecutive_error_limit:
        return Phase.ERROR
    if _trailing(phases, Phase.FAIL, skip=(Phase.ERROR,)) >= max(rules.failure_limit, 1):
        return Phase.FAIL
    if _trailing(phases, Phase.INCONCLUSIVE, skip=(Phase.ERROR,)) > rules.inconclusive_limit:
        return Phase.INCONCLUSIVE
    latest = next((Phase(p) for p in reversed(phases) if p != Phase.ERROR), None)
    return latest if latest in (Phase.PASS, Phase.MARGINAL) else None


def _trailing(phases: Sequence[str], wanted: Phase, skip: tuple[Phase, ...]) -> int:
    count = 0
    for phase in reversed(phases):
        if phase in skip:
            continue
        if phase != wanted:
            break
        count += 1
    return count
