"""Actions whose process died: ended honestly instead of left `planned` or `deploying` for ever.

A move is recorded as `deploying` before the deployer acts and `done` after. If the process is
killed, or the database goes away between the two, serving may have moved while the pointer has
not. Every monitor looks for such actions on each heartbeat: ones whose process stopped beating,
and its own that it no longer has in hand (the database came back after the move). For a move, it
asks the deployer where live is: the new version means the move took effect (the pointer is set
and the action is `done`); another version means it did not (`failed`); a deployer that cannot
tell (a webhook) leaves a human to check, so the action fails with that said and an alert is sent.
A `planned` action whose process died (a killed retraining) did nothing that lasts: it fails with
the reason and an alert, for a human to retry.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from monitor.actions.alertmanager import STRANDED
from monitor.actions.deployers import deployer_for
from monitor.actions.ladder import IN_HAND, tell
from monitor.errors import ForgetmenotError
from monitor.policy.schema import Config
from monitor.store import Action, Store
from monitor.store.versions import with_made
from monitor.vocabulary import ActionStatus

log = logging.getLogger("forgetmenot.actions")
UNCONFIRMED = "ForgetmenotMoveUnconfirmed"


def settle(store: Store, config: Config, holder: str, silent_for: timedelta) -> list[Action]:
    """End every orphaned action of the models in `config`; returns them as ended. Run on every
    heartbeat, so the versions the monitor made are read only when there is something to settle."""
    orphaned = [a for a in store.orphaned_actions(silent_for, holder, IN_HAND) if a.model in config.models]
    if not orphaned:
        return []
    config = with_made(config, store)
    return [_settle_one(store, config, action) for action in orphaned]


def _settle_one(store: Store, config: Config, action: Action) -> Action:
    assert action.id is not None
    gone = f"its process {action.holder} stopped before finishing it"
    if action.status == ActionStatus.PLANNED:
        ended = store.finish_action(action.id, ActionStatus.FAILED,
                                    detail=f"{gone}; nothing was deployed. Retry it by hand if still needed")
        tell(config, ended, STRANDED, f"{action.model}: action {action.id} ({action.kind}) was cut short; "
             f"{action.from_version} is still live")
        return ended
    where = _where_live(config, action.model)
    if where is not None and where == action.to_version:
        store.set_live(action.model, where, action.id)
        return store.finish_action(action.id, ActionStatus.DONE,
                                   detail=f"{gone}; the deployer reports {where} live, so the move took "
                                   "effect and the pointer now says so")
    if where is not None:
        return store.finish_action(action.id, ActionStatus.FAILED,
                                   detail=f"{gone}; the deployer reports {where} live, so the move to "
                                   f"{action.to_version} did not take effect")
    ended = store.finish_action(action.id, ActionStatus.FAILED,
                                detail=f"{gone} while moving to {action.to_version}, and the deployer cannot "
                                "say which version is live: check serving, then set it with "
                                "`forgetmenot rollback`")
    tell(config, ended, UNCONFIRMED, f"{action.model}: a move to {action.to_version} was interrupted; "
         "whether it took effect is unknown")
    return ended


def _where_live(config: Config, model: str) -> str | None:
    try:
        return deployer_for(config, model).current(model)
    except ForgetmenotError as exc:
        log.error("cannot ask %s's deployer where live is: %s", model, exc)
        return None
