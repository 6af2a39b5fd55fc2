"""The fleet at a glance: the newest of everything, per model, each in one grouped query.

The pages of `serve` read through these, so no page costs a query per model or per cell: the fleet
board stays fast at 50 models x 4 versions x 6 suites, and a long history is cut in SQL.
"""

from __future__ import annotations

from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import col, select

from monitor.store.engine import Database
from monitor.store.tables import Action, LiveVersion, Run, RunKind, Verdict
from monitor.vocabulary import RunStatus


class Overview(Database):
    def newest_verdicts(self) -> list[Verdict]:
        """The newest verdict per model, candidate and capability, oldest first."""
        newest = sa_select(func.max(Verdict.id)).group_by(
            col(Verdict.model), col(Verdict.candidate), col(Verdict.capability))
        query = select(Verdict).where(col(Verdict.id).in_(newest)).order_by(col(Verdict.id))
        with self.session() as s:
            return list(s.exec(query).all())

    def last_runs(self) -> dict[str, Run]:
        """Each model's newest run, whatever its status."""
        newest = sa_select(func.max(Run.id)).group_by(col(Run.model))
        with self.session() as s:
            return {run.model: run for run in s.exec(select(Run).where(col(Run.id).in_(newest))).all()}

    def recent_actions(self, per_model: int) -> dict[str, list[Action]]:
        """Each model's newest `per_model` actions, newest first: one windowed query."""
        rank = func.row_number().over(partition_by=col(Action.model), order_by=col(Action.id).desc())
        inner = sa_select(col(Action.id), rank.label("rank")).subquery()
        query = (select(Action).join(inner, col(Action.id) == inner.c.id).where(inner.c.rank <= per_model)
                 .order_by(col(Action.id).desc()))
        found: dict[str, list[Action]] = {}
        with self.session() as s:
            for action in s.exec(query).all():
                found.setdefault(action.model, []).append(action)
        return found

    def live_pointers(self) -> dict[str, str]:
        """Every model the registry has moved: its live version."""
        with self.session() as s:
            return dict(s.execute(sa_select(col(LiveVersion.model), col(LiveVersion.version))).tuples().all())

    def score_history(self, model: str, per_series: int) -> list[tuple[Run, RunKind]]:
        """A model's complete runs with their scores per kind, the newest `per_series` runs of each
        version and suite, oldest first."""
        rank = func.row_number().over(partition_by=(col(Run.version), col(Run.suite)),
                                      order_by=col(Run.id).desc())
        ranked = sa_select(col(Run.id), rank.label("rank")).where(
            col(Run.model) == model, col(Run.status) == RunStatus.COMPLETE)
        inner = ranked.subquery()
        query = (sa_select(Run, RunKind).join(inner, col(Run.id) == inner.c.id)
                 .join(RunKind, col(RunKind.run_id) == col(Run.id))
                 .where(inner.c.rank <= per_series).order_by(col(Run.id), col(RunKind.kind)))
        with self.session() as s:
            return [(run, kind) for run, kind in s.execute(query).tuples().all()]
