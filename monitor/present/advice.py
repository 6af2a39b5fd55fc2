"""The steps a summary advises (`monitor.present.summary`), each in words with its command.

Every command here exists and goes through the same guards and audit trail as the monitor:
`approve` carries out what the ladder proposed, `rollback` moves live back, `explain` and
`actions` only read, `probe` measures again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from monitor.policy.schema import Guards, Rules
from monitor.store import Action, Verdict
from monitor.store.runs import RunErrors
from monitor.vocabulary import ActionKind, ActionStatus, Diagnosis, RunStatus

ROLL_BACK = ("Roll back: the knowledge left the weights, and a few examples of retraining will not bring "
             "it back.")
RETRAIN = ("Retrain, do not roll back: the model still knows, and a few examples of the recovery split "
           "bring the skill back without losing the fine-tune.")
UNTOLD = ("The suite measures one way only, so the policy's on_alignment_loss ladder applies; look at the "
          "items to tell whether the knowledge is gone.")
MARGINAL = "Look at the regressed items: the ladder acts only on FAIL, and the next verdicts decide."
MUTED = "Nothing is done about a muted capability: unmute it in the policy to have the ladder act."


@dataclass(frozen=True)
class Step:
    """One thing to do, in words, with the command that does it (None: nothing to type)."""

    say: str
    command: str | None = None


def rollback_command(v: Verdict, to: str | None = None) -> str:
    return f"forgetmenot rollback {v.model} --to {to or v.baseline}"


def explain_command(v: Verdict) -> str:
    return f"forgetmenot explain {int(v.id or 0)}"


def action_line(a: Action) -> str:
    """`retrain of v2 (action #2, for verdict #1): pending approval`, then the action's detail."""
    status = "dry run: nothing moved" if a.status == ActionStatus.DRY_RUN else _status(a)
    line = f"{a.kind}{_move(a)} (action #{a.id}, for verdict #{a.verdict_id}): {status}"
    return f"{line}: {a.detail}" if a.detail else line


def _move(a: Action) -> str:
    if a.kind == ActionKind.ALERT:
        return ""
    if a.to_version:
        return f" {a.from_version} → {a.to_version}"
    return f" of {a.from_version}"


def planned(steps: Sequence[str], rules: Rules, guards: Guards, started: bool) -> str:
    """The steps the ladder has still to take: next, once it has begun; else once the failure
    settles."""
    said = f"next: {' → '.join(steps)}"
    if not started:
        said = f"the ladder will: {' → '.join(steps)}, once {rules.failure_limit} FAIL verdict(s) settle it"
    if guards.approval == "manual":
        said += "; each move waits for forgetmenot approve"
    return said


def muted(v: Verdict) -> tuple[Step, ...]:
    return (Step("Muted: measured and shown, never acted on. The items it lost:", explain_command(v)),)


def marginal(v: Verdict) -> tuple[Step, ...]:
    return (Step(MARGINAL, explain_command(v)),)


def knowledge(v: Verdict, live: str, actions: Sequence[Action], ladder: Sequence[str]) -> tuple[Step, ...]:
    """The rollback: the ladder's when it waits for approval or is done, else by hand."""
    rollback = _newest(actions, ActionKind.ROLLBACK)
    if rollback is not None and rollback.status == ActionStatus.PENDING_APPROVAL:
        say = f"Approve the ladder's rollback to {rollback.to_version} (action #{rollback.id}):"
        return (Step(say, f"forgetmenot approve {rollback.id}"),)
    if rollback is not None and rollback.status == ActionStatus.DONE:
        return (Step(f"Nothing: rolled back to {rollback.to_version} (action #{rollback.id})."),)
    if live != v.candidate:
        return (Step(f"Nothing to roll back: {v.candidate} is no longer live ({live} is)."),)
    target = rollback.to_version if rollback is not None else None
    say = "Roll back by hand, through the same guards and audit trail as the monitor:"
    if rollback is None and ActionKind.ROLLBACK in ladder:
        say = "The ladder rolls back next, to the newest version that qualifies; by hand, to the baseline:"
    if rollback is not None:
        say = f"The ladder's rollback (action #{rollback.id}) is {_status(rollback)}; roll back by hand:"
    return (Step(say, rollback_command(v, target)),)


def alignment(v: Verdict, rules: Rules, actions: Sequence[Action],
              ladder: Sequence[str]) -> tuple[tuple[Step, ...], str]:
    """The recovery retraining, as far as the ladder took it; never a rollback."""
    todo = UNTOLD if v.diagnosis != Diagnosis.ALIGNMENT_LOSS else RETRAIN
    retrain = _newest(actions, ActionKind.RETRAIN)
    if retrain is not None:
        return (_retrain_step(v, retrain),), todo
    if ActionKind.RETRAIN in ladder:
        say = (f"Wait: the ladder retrains next (it acts once {rules.failure_limit} FAIL verdict(s) settle "
               "the failure). Meanwhile, the items it lost:")
        return (Step(say, explain_command(v)),), todo
    say = ("The policy's on_alignment_loss ladder has no retrain step: add it, so recovery retraining can "
           "bring the skill back. The items it lost:")
    return (Step(say, explain_command(v)),), todo


def _retrain_step(v: Verdict, retrain: Action) -> Step:
    if retrain.status == ActionStatus.PENDING_APPROVAL:
        say = f"Approve the recovery retraining the ladder proposed (action #{retrain.id}):"
        return Step(say, f"forgetmenot approve {retrain.id}")
    if retrain.status == ActionStatus.DRY_RUN:
        would = f"The ladder would retrain (action #{retrain.id}): {retrain.detail}."
        return Step(f"Dry run: nothing moved. {would} Set policy.guards.dry_run to false to let it.")
    if retrain.status == ActionStatus.DONE:
        return Step(f"Nothing: retrained; {retrain.to_version} went live (action #{retrain.id}).")
    if retrain.status in (ActionStatus.PLANNED, ActionStatus.DEPLOYING):
        return Step(f"Wait: the recovery retraining is under way (action #{retrain.id}).")
    say = f"The recovery retraining (action #{retrain.id}) ended {_status(retrain)}: see why:"
    return Step(say, f"forgetmenot actions --model {v.model}")


def fallback(v: Verdict, live: str, ladder: Sequence[str]) -> Step | None:
    """A rollback as the last resort, only where the ladder has one or the diagnosis is unknown."""
    if live != v.candidate:
        return None
    if v.diagnosis == Diagnosis.UNDIAGNOSED:
        return Step("If the items show the knowledge is gone (this suite cannot tell): roll back",
                    rollback_command(v))
    if ActionKind.ROLLBACK not in ladder:
        return None
    return Step("Fallback, the ladder's later step, only if retraining does not bring it back: roll back",
                rollback_command(v))


def too_few(v: Verdict, items: int, needed: int) -> tuple[Step, ...]:
    add = (f"Add at least {needed - items} probe items to suite {v.suite} (or lower min_items for "
           f"{v.capability}, for weaker evidence), then check the policy:")
    return (Step(add, "forgetmenot validate"),)


def wait(v: Verdict, rules: Rules) -> tuple[Step, ...]:
    say = (f"Wait for more measurements (after {rules.inconclusive_limit} INCONCLUSIVE verdicts in a row "
           "the capability settles as such); the items it lost meanwhile:")
    return (Step(say, explain_command(v)),)


def broken(v: Verdict, errors: Sequence[RunErrors], endpoint: str | None) -> tuple[Step, ...]:
    """Fix the serving side, then measure again each version whose run broke."""
    where = f" at {endpoint}" if endpoint else ""
    fix = Step(f"Fix the serving side{where}: the measurement broke, the model did not forget.")
    again = [_measure_again(v, found) for found in errors]
    return (fix, *again)


def _measure_again(v: Verdict, found: RunErrors) -> Step:
    run = found.run
    command = f"forgetmenot probe --model {v.model} --version {run.version} --suite {run.suite}"
    ended = f"its run {run.id} ended {run.status}" if run.status != RunStatus.COMPLETE else f"run {run.id}"
    return Step(f"Then measure {run.version} again ({ended}):", command)


def _newest(actions: Sequence[Action], kind: str) -> Action | None:
    found = [a for a in actions if a.kind == kind]
    return found[-1] if found else None


def _status(action: Action) -> str:
    return action.status.replace("_", " ")
