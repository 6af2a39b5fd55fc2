"""The audit trail of actions, and the registry deployer's pointer to the live version."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, delete, or_
from sqlmodel import col, select

from monitor.errors import StoreError
from monitor.redaction import redact
from monitor.store.engine import Database
from monitor.store.tables import Action, Claim, Heartbeat, LiveVersion, ModelVersion, utcnow
from monitor.vocabulary import ActionStatus

if TYPE_CHECKING:
    from monitor.policy.schema import Config

class Audit(Database):
    def add_action(self, action: Action) -> Action:
        action.reason, action.detail = redact(action.reason), redact(action.detail)
        with self.session() as s:
            s.add(action)
            s.commit()
            return action

    def finish_action(self, action_id: int, status: str, detail: str = "", actor: str = "") -> Action:
        changes: dict[str, Any] = {"status": status, "finished_at": utcnow()}
        changes |= {"detail": detail} if detail else {}
        return self.revise_action(action_id, **changes | ({"actor": actor} if actor else {}))

    def revise_action(self, action_id: int, **changes: Any) -> Action:
        changes = {k: redact(v) if k in ("reason", "detail") and isinstance(v, str) else v
                   for k, v in changes.items()}
        with self.session() as s:
            action = s.get(Action, action_id)
            if action is None:
                raise StoreError(f"action {action_id} does not exist")
            for name, value in changes.items():
                setattr(action, name, value)
            s.add(action)
            s.commit()
            return action

    def orphaned_actions(self, silent_for: timedelta, holder: str, in_hand: Collection[int]) -> list[Action]:
        """Actions left `planned` or `deploying` by a process that is gone: one that stopped
        beating for `silent_for`, or this one (`holder`) for an action older than that which it no
        longer has in hand (the database came back after the move)."""
        cutoff = utcnow() - silent_for
        alive = select(Heartbeat.holder).where(col(Heartbeat.seen_at) >= cutoff)
        unfinished = [status for status in ActionStatus if status.unfinished]
        query = select(Action).where(
            col(Action.status).in_(unfinished), col(Action.holder).is_not(None),
            or_(and_(col(Action.holder) == holder, col(Action.created_at) < cutoff),
                and_(col(Action.holder) != holder, col(Action.holder).not_in(alive))))
        with self.session() as s:
            return [a for a in s.exec(query).all() if a.id not in in_hand]

    def get_action(self, action_id: int) -> Action | None:
        with self.session() as s:
            return s.get(Action, action_id)

    def actions(self, model: str | None = None, since: datetime | None = None,
                newest: int | None = None) -> list[Action]:
        """Oldest first; `newest` keeps only that many of the latest, cut in SQL."""
        query = select(Action).order_by(col(Action.id).desc())
        if model is not None:
            query = query.where(Action.model == model)
        if since is not None:
            query = query.where(col(Action.created_at) >= since)
        if newest is not None:
            query = query.limit(newest)
        with self.session() as s:
            return list(reversed(s.exec(query).all()))

    def live(self, model: str) -> str | None:
        with self.session() as s:
            row = s.get(LiveVersion, model)
            return row.version if row else None

    def set_live(self, model: str, version: str, action_id: int | None) -> None:
        with self.session() as s:
            row = s.get(LiveVersion, model) or LiveVersion(model=model, version=version)
            row.version, row.updated_at, row.action_id = version, utcnow(), action_id
            s.add(row)
            s.commit()

    def reset_actions(self) -> None:
        """Empty the audit trail, the live pointer, the claims and the versions the monitor made.
        Only for a throwaway copy: the full-loop demo starts every run from the same state."""
        with self.session() as s:
            for table in (Action, LiveVersion, Claim):
                s.exec(delete(table))
            s.exec(delete(ModelVersion).where(col(ModelVersion.path).is_not(None)))
            s.commit()

    def live_version(self, config: Config, model: str) -> str:
        """The registry's pointer once an action has moved it, else what the policy file says."""
        return self.live(model) or config.models[model].live
