"""Runs and their item results: written as a probe goes, summed once when it finishes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from monitor.errors import StoreError
from monitor.redaction import redact
from monitor.store.engine import Database
from monitor.store.tables import ItemResult, KindSummary, Run, RunError, RunKind, SuiteRecord, utcnow
from monitor.vocabulary import RunStatus

# INSERT … ON CONFLICT DO NOTHING, as each database here spells it.
_INSERTS: dict[str, Callable[..., Any]] = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


@dataclass(frozen=True)
class RunErrors:
    """Why a run's measurements failed: its error kinds with their counts, and the first item's
    message (redacted as it was stored; the run's own error where no item got as far), so nobody
    has to read item results to find the cause."""

    run: Run
    kinds: dict[str, int] = field(default_factory=dict)
    first: str | None = None


class Runs(Database):
    def start_run(self, **fields: Any) -> Run:
        with self.session() as s:
            run = Run(**fields)
            s.add(run)
            s.commit()
            return run

    def add_results(self, run_id: int, results: Iterable[ItemResult]) -> None:
        with self.session() as s:
            _add_results(s, run_id, results)
            s.commit()

    def finish_run(self, run_id: int, status: str, error: str | None = None) -> Run:
        if status not in set(RunStatus):
            raise ValueError(f"unknown run status {status!r}")
        with self.session() as s:
            run = s.get(Run, run_id, with_for_update=True)  # two finishes at once sum one after the other
            if run is None:
                raise StoreError(f"run {run_id} does not exist")
            counts = s.exec(select(func.count(), func.count(col(ItemResult.error_kind)))
                            .where(ItemResult.run_id == run_id)).one()
            run.item_count, run.error_count = int(counts[0]), int(counts[1])
            kinds = _add_aggregates(s, run_id)
            summary = error_summary(error, kinds, _first_error(s, run_id), run.item_count)
            run.status, run.error, run.finished_at = status, redact(summary) if summary else None, utcnow()
            s.add(run)
            s.commit()
            return run

    def replay_run(self, run: Run, results: Sequence[ItemResult], complete: bool, note: str) -> int:
        """Put back a run the database could not take (`monitor.probing.spool`); returns how many
        results were added. Keyed by run, item and kind: a result already stored, by an earlier
        replay or by one running at the same moment, is kept and this copy dropped."""
        with self.session() as s:
            row = s.get(Run, run.id) if run.id is not None else None
            if not _same_run(row, run):
                row = Run(**run.model_dump(exclude={"id"}))  # the database lost it: a new row
                s.add(row)
                s.flush()
            assert row.id is not None
            run_id = row.id
            added = _add_new_results(s, run_id, results)
            s.commit()
        if not complete:
            self.finish_run(run_id, RunStatus.INTERRUPTED, error=f"stopped by a database outage; {note}")
        else:
            status, error = ended_as(results)
            self.finish_run(run_id, status, error=f"{error}; {note}" if error else None)
        return added

    def end_unreplayable(self, run: Run, reason: str) -> bool:
        """A spooled run that no replay can put back ends as an error, so the judge reports ERROR
        instead of waiting on it for ever. Only the same run (a restored database may hold another
        under its id), and only while it is still running; True if it was ended."""
        with self.session() as s:
            row = s.get(Run, run.id) if run.id is not None else None
        running = _same_run(row, run) and row.status == RunStatus.RUNNING
        if running:
            self.finish_run(run.id or 0, RunStatus.ERROR, error=reason)
        return running

    def get_run(self, run_id: int) -> Run | None:
        with self.session() as s:
            return s.get(Run, run_id)

    def runs(self, model: str | None = None, version: str | None = None, suite: str | None = None,
             status: str | None = None) -> list[Run]:
        query = select(Run).order_by(col(Run.started_at), col(Run.id))
        for column, value in ((Run.model, model), (Run.version, version), (Run.suite, suite),
                              (Run.status, status)):
            if value is not None:
                query = query.where(column == value)
        with self.session() as s:
            return list(s.exec(query).all())

    def run_names(self) -> list[tuple[str, str, str]]:
        """Every (model, version, suite) a stored run is of: the names `history` can show."""
        query = sa_select(col(Run.model), col(Run.version), col(Run.suite)).distinct()
        with self.session() as s:
            rows = s.execute(query).all()
        return [(str(model), str(version), str(suite)) for model, version, suite in rows]

    def latest_complete_run(self, model: str, version: str, content_hash: str, backend: str | None = None,
                            dtype: str | None = None) -> Run | None:
        """The newest complete run of exactly this suite content (on this backend and dtype, when
        given): the one definition every caller uses."""
        query = (select(Run).join(SuiteRecord, col(Run.suite_id) == col(SuiteRecord.id))
                 .where(Run.model == model, Run.version == version, Run.status == RunStatus.COMPLETE,
                        SuiteRecord.content_hash == content_hash)
                 .order_by(col(Run.id).desc()))
        for column, value in ((Run.backend, backend), (Run.dtype, dtype)):
            if value is not None:
                query = query.where(column == value)
        with self.session() as s:
            return s.exec(query).first()

    def finished_runs(self, model: str, version: str, content_hash: str) -> list[Run]:
        """Runs of exactly this suite content that ended (complete, error or interrupted), oldest first."""
        query = (select(Run).join(SuiteRecord, col(Run.suite_id) == col(SuiteRecord.id))
                 .where(Run.model == model, Run.version == version, Run.status != RunStatus.RUNNING,
                        SuiteRecord.content_hash == content_hash)
                 .order_by(col(Run.id)))
        with self.session() as s:
            return list(s.exec(query).all())

    def results(self, run_id: int, kind: str | None = None) -> list[ItemResult]:
        query = select(ItemResult).where(ItemResult.run_id == run_id).order_by(col(ItemResult.id))
        if kind is not None:
            query = query.where(ItemResult.kind == kind)
        with self.session() as s:
            return list(s.exec(query).all())

    def run_errors(self, run_ids: Sequence[int]) -> dict[int, RunErrors]:
        """Each run's errors, in three queries whatever the number of runs."""
        wanted = list(run_ids)
        with self.session() as s:
            runs = s.exec(select(Run).where(col(Run.id).in_(wanted))).all()
            counts = s.exec(select(RunError).where(col(RunError.run_id).in_(wanted))
                            .order_by(col(RunError.count).desc(), col(RunError.error_kind))).all()
            firsts = sa_select(func.min(ItemResult.id)).where(
                col(ItemResult.run_id).in_(wanted), col(ItemResult.error_kind).is_not(None)).group_by(
                col(ItemResult.run_id))
            messages = s.exec(select(ItemResult).where(col(ItemResult.id).in_(firsts))).all()
        first = {m.run_id: m.error or m.error_kind for m in messages}
        kinds: dict[int, dict[str, int]] = {}
        for row in counts:
            kinds.setdefault(row.run_id, {})[row.error_kind] = row.count
        return {run.id or 0: RunErrors(run, kinds.get(run.id or 0, {}), first.get(run.id, run.error))
                for run in runs}

    def summaries(self, run_ids: Sequence[int]) -> dict[int, list[KindSummary]]:
        """Mean score per kind for each run: kept with a finished run (`run_kind`), summed in the
        database only for a run still in progress."""
        out: dict[int, list[KindSummary]] = {run_id: [] for run_id in run_ids}
        query = select(RunKind).where(col(RunKind.run_id).in_(list(run_ids))).order_by(col(RunKind.id))
        with self.session() as s:
            for row in s.exec(query).all():
                out[row.run_id].append(KindSummary(row.kind, row.mean_score, row.scored, row.errors))
            pending = [run_id for run_id, found in out.items() if not found]
            for run_id, summary in _kind_summaries(s, pending) if pending else []:
                out[run_id].append(summary)
        return out


def _same_run(row: Run | None, run: Run) -> TypeGuard[Run]:
    return row is not None and (row.model, row.version, row.suite) == (run.model, run.version, run.suite)


def ended_as(results: Sequence[ItemResult]) -> tuple[RunStatus, str | None]:
    """How a run that measured every item ends: complete if any item was scored, else error."""
    if any(r.error_kind is None for r in results):
        return RunStatus.COMPLETE, None
    return RunStatus.ERROR, "no item could be measured"


def _add_results(s: Session, run_id: int, results: Iterable[ItemResult]) -> None:
    """Results as stored: attached to their run, their errors redacted."""
    for result in results:
        result.run_id = run_id
        result.error = redact(result.error) if result.error else result.error
        s.add(result)


def _add_new_results(s: Session, run_id: int, results: Sequence[ItemResult]) -> int:
    """Each result the run does not hold yet; how many that was. The unique key decides, in one
    statement, so two replays at once cannot both find a result missing and both add it."""
    if not results:
        return 0
    rows = [_as_row(run_id, result) for result in results]
    key = [col(ItemResult.run_id), col(ItemResult.item_id), col(ItemResult.kind)]
    insert = _INSERTS[s.get_bind().dialect.name](ItemResult)
    statement = insert.on_conflict_do_nothing(index_elements=key).returning(col(ItemResult.id))
    return len(s.execute(statement, rows).all())


def _as_row(run_id: int, result: ItemResult) -> dict[str, Any]:
    row = result.model_dump(exclude={"id"})
    row["run_id"] = run_id
    row["error"] = redact(result.error) if result.error else result.error
    return row


def _kind_summaries(s: Session, run_ids: Sequence[int]) -> list[tuple[int, KindSummary]]:
    query = (sa_select(col(ItemResult.run_id), col(ItemResult.kind), func.avg(ItemResult.score),
                       func.count(col(ItemResult.score)), func.count(col(ItemResult.error_kind)))
             .where(col(ItemResult.run_id).in_(list(run_ids)))
             .group_by(col(ItemResult.run_id), col(ItemResult.kind)))
    return [(int(run_id), KindSummary(kind, None if mean is None else float(mean), int(scored), int(errors)))
            for run_id, kind, mean, scored, errors in s.execute(query).all()]


def _add_aggregates(s: Session, run_id: int) -> dict[str, int]:
    """Summed afresh: a run finished again (replayed from the spool) keeps one row per kind.
    Returns the failed measurements per error kind."""
    for table in (RunKind, RunError):
        for old in s.exec(select(table).where(table.run_id == run_id)).all():
            s.delete(old)
    s.flush()
    for _, summary in _kind_summaries(s, [run_id]):
        s.add(RunKind(run_id=run_id, kind=summary.kind, mean_score=summary.mean_score,
                      scored=summary.scored, errors=summary.errors))
    per_error = sa_select(col(ItemResult.error_kind), func.count()).where(
        col(ItemResult.run_id) == run_id, col(ItemResult.error_kind).is_not(None)).group_by(
        col(ItemResult.error_kind))
    kinds = {str(error_kind): int(count) for error_kind, count in s.execute(per_error).all()}
    for error_kind, count in kinds.items():
        s.add(RunError(run_id=run_id, error_kind=error_kind, count=count))
    return kinds


def _first_error(s: Session, run_id: int) -> str | None:
    failed = col(ItemResult.error_kind).is_not(None)
    query = select(ItemResult.error).where(ItemResult.run_id == run_id, failed).order_by(col(ItemResult.id))
    return s.exec(query.limit(1)).first()


def error_summary(error: str | None, kinds: dict[str, int], first: str | None, measured: int) -> str | None:
    """A run's error as one line: what ended it, its error kinds with their counts (most first) and
    the first failed item's message. Made once, when the run finishes, so every surface that shows
    the run shows the cause without reading item results."""
    if not kinds:
        return error
    ranked = sorted(kinds.items(), key=lambda pair: (-pair[1], pair[0]))
    counted = ", ".join(f"{count} {kind}" for kind, count in ranked)
    head = error or f"{sum(kinds.values())} of {measured} measurements failed"
    return f"{head}: {counted}; first: {first}" if first else f"{head}: {counted}"
