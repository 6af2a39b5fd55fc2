"""The policy ladder: from a settled verdict to alert, rollback or retrain, behind guards.

Every step is an `Action` row written *before* anything is done (the audit trail survives a
crash mid-action), then finished as `done`, `failed`, `refused` (a guard said no, with the
reason), `dry_run` (what would have happened) or left `pending_approval` for a human
(`forgetmenot approve`). A failure is acted on once, not once per cycle, and by one replica: the
first monitor to insert the claim `act:<model>:<capability>:<first verdict of the failure>` acts,
the others (and later cycles of the same failure) skip. Humans use the same path
(`forgetmenot rollback MODEL --to VERSION`), so the guards and the audit trail are the same.
"""

from __future__ import annotations

import logging
import zlib
from datetime import timedelta

from monitor.actions.alertmanager import REJECTED, STRANDED, AlertError, action_alert, push, verdict_alert
from monitor.actions.deployers import deployer_for
from monitor.actions.retrain import Hooks, Outcome, Recovery
from monitor.actions.triggers import triggers
from monitor.errors import ForgetmenotError, Refused
from monitor.policy.loading import choice_message
from monitor.policy.schema import Config, Guards
from monitor.present.facts import Summaries
from monitor.store import Action, Store, Verdict, utcnow
from monitor.store.coordination import LockBusy, process_id
from monitor.store.versions import with_made
from monitor.vocabulary import MOVES, ActionKind, ActionStatus, Phase, TriggeredBy

log = logging.getLogger("forgetmenot.actions")
IN_HAND: set[int] = set()  # ids of the actions this process is carrying out now


def rollback_target(store: Store, config: Config, model: str, live: str) -> str | None:
    """The newest version listed before `live` whose every counted capability last PASSed.

    The baseline is the reference the policy declares good, so it qualifies without a verdict;
    any other version must have been judged, and never FAILed or errored, on its last verdicts.
    """
    spec = config.models[model]
    names = list(spec.versions)
    earlier = names[: names.index(live)] if live in names else []
    for version in reversed(earlier):
        if qualifies(store, config, model, version):
            return version
    return None


def qualifies(store: Store, config: Config, model: str, version: str) -> bool:
    if version == config.models[model].baseline:
        return True
    latest: dict[str, Verdict] = {}
    for verdict in store.verdicts(model=model, candidate=version,
                                  baseline=config.models[model].baseline):
        latest[verdict.capability] = verdict
    counted = [v for v in latest.values() if not v.muted]  # muted as judged
    return bool(counted) and all(v.phase == Phase.PASS for v in counted)


def act(store: Store, config: Config, model: str, holder: str, hooks: Hooks | None = None) -> list[Action]:
    """Carry out the ladder for every new trigger; returns the actions recorded this time.

    One retraining covers every capability failing at that moment (see `retrain`), so a later
    trigger's `retrain` step in the same pass is recorded as covered instead of training again.
    Once live has moved, the remaining triggers were about the old version and are left alone.
    """
    config = with_made(config, store)
    recorded: list[Action] = []
    retrained: Action | None = None
    for trigger in triggers(store, config, model):
        if not store.claim(f"act:{model}:{trigger.verdict.capability}:{trigger.episode}", holder):
            continue  # another replica, or an earlier cycle of this failure, acted on it
        for step in trigger.steps:
            action = _record(store, config, model, step, trigger.verdict, holder)
            if step == ActionKind.RETRAIN and retrained is not None:
                covered = f"covered by action {retrained.id} ({retrained.status})"
                recorded.append(store.finish_action(action.id or 0, ActionStatus.REFUSED, detail=covered))
                continue
            recorded.append(_run(store, config, action, hooks=hooks))
            retrained = recorded[-1] if step == ActionKind.RETRAIN else retrained
            if action.kind in MOVES and recorded[-1].status == ActionStatus.DONE:
                return recorded  # the live version changed: the rest applied to the old one
    return recorded


def rollback(store: Store, config: Config, model: str, to: str, actor: str, *,
             dry_run: bool = False) -> Action:
    """A human's rollback: the same guards and audit trail as the monitor's."""
    config = with_made(config, store)
    versions = config.models[model].versions
    if to not in versions:
        raise Refused(f"{model}: {choice_message(to, list(versions), 'versions')}")
    action = store.add_action(Action(model=model, kind=ActionKind.ROLLBACK, trigger=TriggeredBy.MANUAL,
                                     actor=actor, holder=process_id(),
                                     from_version=store.live_version(config, model), to_version=to,
                                     dry_run=dry_run or config.policy.guards.dry_run))
    assert action.id is not None
    if not qualifies(store, config, model, to):
        return store.finish_action(action.id, ActionStatus.REFUSED,
                                   detail=f"{to} is not the baseline and its last verdicts are not all PASS")
    return _run(store, config, action, approved=True)


def approve(store: Store, config: Config, action_id: int, actor: str, hooks: Hooks | None = None) -> Action:
    config = with_made(config, store)
    action = store.get_action(action_id)
    if action is None:
        raise Refused(f"action {action_id} does not exist")
    if action.status != ActionStatus.PENDING_APPROVAL:
        raise Refused(f"action {action_id} is {action.status}, not pending approval")
    by = f"{action.actor}, approved by {actor}"
    live = store.live_version(config, action.model)
    if live != action.from_version:  # the failing version is no longer live: nothing to roll back
        return store.finish_action(action_id, ActionStatus.REFUSED, actor=by, detail=f"live moved from "
                                   f"{action.from_version} to {live} while this waited for approval")
    IN_HAND.add(action_id)  # before the row says planned: a heartbeat must not take it for an orphan
    try:
        approved = store.revise_action(action_id, status=ActionStatus.PLANNED, actor=by, holder=process_id())
        return _run(store, config, approved, approved=True, hooks=hooks)
    finally:
        IN_HAND.discard(action_id)


def _record(store: Store, config: Config, model: str, step: str, verdict: Verdict, holder: str) -> Action:
    live = store.live_version(config, model)
    target = rollback_target(store, config, model, live) if step == ActionKind.ROLLBACK else None
    return store.add_action(Action(
        model=model, kind=step, trigger=TriggeredBy.VERDICT, verdict_id=verdict.id,
        capability=verdict.capability,
        diagnosis=verdict.diagnosis, from_version=live, to_version=target, actor=holder,
        holder=process_id(), dry_run=config.policy.guards.dry_run,
        reason=f"{verdict.capability}: {verdict.reason}"[:500]))


def _run(store: Store, config: Config, action: Action, approved: bool = False,
         hooks: Hooks | None = None) -> Action:
    """`_carry_out`, with the action in this process's hands and its heartbeat going, so another
    replica can tell a retraining that is taking an hour from one whose process was killed."""
    assert action.id is not None
    IN_HAND.add(action.id)
    try:
        with store.beating(process_id()):
            return _carry_out(store, config, action, approved, hooks)
    finally:
        IN_HAND.discard(action.id)


def _carry_out(store: Store, config: Config, action: Action, approved: bool = False,
               hooks: Hooks | None = None) -> Action:
    """Guard and carry out one action. Moves of one model are serialized across replicas, so two
    can never both pass the cooldown check; a retraining holds that lock only to be let in and to
    promote, never for the hours of training and probing in between."""
    assert action.id is not None
    if action.kind == ActionKind.ALERT:
        return _alert(store, config, action)
    lock = zlib.crc32(f"move:{action.model}".encode()) & 0x7FFFFFFF
    try:
        with store.exclusive(lock):
            held = _held(store, config.policy.guards, action, approved)
            if held is not None or action.kind == ActionKind.ROLLBACK:
                return held or _move(store, config, action)
    except LockBusy as exc:
        return store.finish_action(action.id, ActionStatus.FAILED, detail=f"not started: {exc}")
    return _retrain(store, config, action, hooks, lock)


def _held(store: Store, guards: Guards, action: Action, approved: bool) -> Action | None:
    """The finished action if a guard holds it back, else None."""
    assert action.id is not None
    refusal = _guard(store, guards, action, approved)
    if refusal == "pending_approval":
        return store.finish_action(action.id, ActionStatus.PENDING_APPROVAL,
                                   detail="manual approval: forgetmenot approve " + str(action.id))
    return store.finish_action(action.id, ActionStatus.REFUSED, detail=refusal) if refusal else None


def _retrain(store: Store, config: Config, action: Action, hooks: Hooks | None, lock: int) -> Action:
    """Train, gate, then promote through the deployer like a rollback; where the gate rejects only
    alignment loss that remains, train again with more examples (`retrain.max_rounds`); else keep
    the rounds' versions and alert what still fails. Whatever breaks in between (training,
    probing, a library) ends that round's action as `failed`: a retraining must never leave its
    audit row open or take the monitor's cycle down."""
    from monitor.actions import retrain

    assert action.id is not None
    try:
        recovery = retrain.Recovery(store, config, action, hooks)
        if action.dry_run:
            spec = recovery.spec
            rounds = spec.max_rounds > 1 and spec.first_round() < spec.max_examples
            more = (f", then up to {spec.max_rounds - 1} more round(s) within {spec.max_examples} examples "
                    "in all while alignment loss remains" if rounds else "")
            return store.finish_action(action.id, ActionStatus.DRY_RUN, detail=f"would retrain "
                                       f"{action.from_version} on {recovery.plan.describe()}{more}")
    except Exception as exc:
        return _broken(store, action, exc)
    return _rounds(store, config, action, recovery, lock)


def _broken(store: Store, action: Action, exc: Exception) -> Action:
    from monitor.actions import retrain

    assert action.id is not None
    if isinstance(exc, retrain.RetrainRefused):
        return store.finish_action(action.id, ActionStatus.REFUSED, detail=str(exc))
    if not isinstance(exc, ForgetmenotError):
        log.exception("retraining for action %s broke", action.id, exc_info=exc)
    detail = str(exc) if isinstance(exc, ForgetmenotError) else f"{exc.__class__.__name__}: {exc}"
    return store.finish_action(action.id, ActionStatus.FAILED, detail=detail)


def _rounds(store: Store, config: Config, first: Action, recovery: Recovery, lock: int) -> Action:
    """Each round is its own audited action: rejected with its figures, then the next one opened.
    A round's id stays in IN_HAND until its row is finished, so no heartbeat takes it for an orphan."""
    tried: list[Outcome] = []
    action = first
    while True:
        assert action.id is not None
        IN_HAND.add(action.id)
        rejected: Action | None = None
        try:
            merged, outcome = recovery.attempt(action)
            trained = store.revise_action(action.id, to_version=outcome.version)
            if not outcome.problems:
                return _promote(store, config, merged, trained, outcome.summary, lock)
            tried.append(outcome)
            why_not = recovery.again(outcome)
            if why_not is not None:
                return _rejected(store, config, trained, tried, recovery, why_not)
            rejected = store.finish_action(action.id, ActionStatus.REJECTED, detail=f"{outcome.summary}; "
                                           f"not promoted: {'; '.join(outcome.problems)}; round "
                                           f"{recovery.plan.round} follows")
            following = _next_round(store, first, recovery.plan.round, outcome)
        except Exception as exc:
            if rejected is None:
                return _broken(store, action, exc)
            log.exception("could not open round %s of action %s", recovery.plan.round, first.id)
            return rejected  # its row is finished; the next round never started
        finally:
            if action is not first:
                IN_HAND.discard(action.id)
        action = following


def _next_round(store: Store, first: Action, number: int, outcome: Outcome) -> Action:
    reason = f"round {number} of the recovery begun by action {first.id}: {_short(outcome)}"
    return store.add_action(Action(
        model=first.model, kind=ActionKind.RETRAIN, trigger=TriggeredBy.ROUND, verdict_id=first.verdict_id,
        capability=first.capability, diagnosis=first.diagnosis, from_version=first.from_version,
        actor=first.actor, holder=process_id(), dry_run=first.dry_run, reason=reason[:500]))


def _short(outcome: Outcome) -> str:
    """What still fails and by how much, in a line an on-call engineer reads in an alert."""
    lacking = [f"{suite} {gap:.1%} short of the baseline" for suite, gap in outcome.retry.items()]
    return "; ".join(lacking + outcome.final) or "; ".join(outcome.problems)


def _rejected(store: Store, config: Config, action: Action, tried: list[Outcome], recovery: Recovery,
              why_not: str) -> Action:
    """No round passed: the last is rejected with every reason, and the alert names the best
    candidate (kept for inspection, as every round's is) and what it still lacks."""
    assert action.id is not None
    outcome, best = tried[-1], max(tried, key=lambda o: (-len(o.problems), o.recovered()))
    rounds = (f"; {len(tried)} rounds, {recovery.plan.total()} recovery examples in all, stopped: {why_not}; "
              f"best {best.version} ({best.recovered():.0%} of the loss back on average)"
              if len(tried) > 1 else f"; stopped: {why_not}")
    why = f"{outcome.summary}; kept for inspection, not promoted: {'; '.join(outcome.problems)}{rounds}"
    rejected = store.finish_action(action.id, ActionStatus.REJECTED, detail=why)
    tell(config, rejected, REJECTED, f"{action.model}: recovery retraining of {action.from_version} ran "
         f"{len(tried)} round(s) on {recovery.plan.total()} recovery examples and no version passed the "
         f"gate; best {best.version} is kept for inspection; still failing: {_short(best)}")
    return rejected


def _promote(store: Store, config: Config, merged: Config, action: Action, summary: str, lock: int) -> Action:
    """A recovered version that passed its gate goes live, unless live moved while it trained."""
    assert action.id is not None
    try:
        with store.exclusive(lock):
            live = store.live_version(config, action.model)
            if live != action.from_version:  # another replica or a human moved it while this trained
                return store.finish_action(action.id, ActionStatus.REFUSED,
                                           detail=f"{summary}; not promoted: live moved from "
                                           f"{action.from_version} to {live} meanwhile")
            return _move(store, merged, action, note=summary)
    except LockBusy as exc:
        return store.finish_action(action.id, ActionStatus.FAILED, detail=f"{summary}; not promoted: {exc}")


def tell(config: Config, action: Action, alertname: str, summary: str) -> None:
    """An action that stopped short needs a human; the audit row says why even if Alertmanager
    is down."""
    spec = config.policy.alertmanager
    if spec is None:
        return
    try:
        push(config, [action_alert(action, spec, alertname, summary)])
    except AlertError as exc:
        log.error("could not alert on action %s: %s", action.id, exc)


def _alert(store: Store, config: Config, action: Action) -> Action:
    """Pushed to Alertmanager with the verdict's facts; the metric rules fire either way."""
    assert action.id is not None
    spec = config.policy.alertmanager
    if spec is None:
        return store.finish_action(action.id, ActionStatus.DRY_RUN if action.dry_run else ActionStatus.DONE,
                                   detail="no policy.alertmanager: the metric rules alert on their own")
    found = store.get_verdict(action.verdict_id) if action.verdict_id else None
    if found is None:
        return store.finish_action(action.id, ActionStatus.FAILED,
                                   detail="the alert has no verdict to report")
    summary = Summaries(store, config).of(*found)
    alert = verdict_alert(found[0], action, summary, spec)
    if action.dry_run:
        return store.finish_action(action.id, ActionStatus.DRY_RUN, detail=f"would push: {summary.happened}")
    try:
        return store.finish_action(action.id, ActionStatus.DONE, detail=push(config, [alert]))
    except AlertError as exc:
        return store.finish_action(action.id, ActionStatus.FAILED, detail=str(exc))


def _move(store: Store, config: Config, action: Action, note: str = "") -> Action:
    assert action.id is not None
    if action.to_version is None:
        stranded = store.finish_action(action.id, ActionStatus.REFUSED,
                                       detail="no earlier version qualifies (judged, last verdicts PASS)")
        if not action.dry_run:
            tell(config, stranded, STRANDED, f"{action.model}: {action.from_version} is failing and no "
                  "earlier version qualifies for a rollback; it stays live")
        return stranded
    if action.dry_run:
        return store.finish_action(action.id, ActionStatus.DRY_RUN,
                                   detail=f"would make {action.to_version} live instead of "
                                   f"{action.from_version}")
    # The intent first: if this process or the database dies while the deployer acts, the row
    # says a move was under way and `orphans.settle` asks the deployer how it ended.
    store.revise_action(action.id, status=ActionStatus.DEPLOYING,
                        detail=f"moving {action.model} from {action.from_version} to {action.to_version}")
    try:
        detail = deployer_for(config, action.model).promote(action.model, action.to_version, action.id)
    except ForgetmenotError as exc:  # a DeployError, or the deployer's extra is not installed
        return store.finish_action(action.id, ActionStatus.FAILED, detail=str(exc))
    except Exception as exc:  # a deployer's library broke in a way it does not document
        log.exception("deploying action %s broke", action.id)
        return store.finish_action(action.id, ActionStatus.FAILED,
                                   detail=f"{exc.__class__.__name__}: {exc}")
    store.set_live(action.model, action.to_version, action.id)
    return store.finish_action(action.id, ActionStatus.DONE, detail=f"{note}; {detail}" if note else detail)


def _guard(store: Store, guards: Guards, action: Action, approved: bool) -> str | None:
    """Why this action may not run now (None: it may). Alerts are never held back."""
    if action.kind not in MOVES:
        return None
    if guards.approval == "manual" and not approved:
        return "pending_approval"
    day_ago, cooled = utcnow() - timedelta(days=1), utcnow() - guards.cooldown
    # When a move took effect (finished_at) counts, not when it was proposed: an approval may
    # come days after the proposal.
    moves = [a.finished_at for a in store.actions(action.model)
             if a.kind in MOVES and a.status == ActionStatus.DONE and a.id != action.id and a.finished_at]
    if any(at >= cooled for at in moves):
        return f"cooldown: {action.model} was moved less than {guards.cooldown} ago"
    if sum(at >= day_ago for at in moves) >= guards.max_actions_per_day:
        return f"limit: {guards.max_actions_per_day} actions per day already taken for {action.model}"
    return None
