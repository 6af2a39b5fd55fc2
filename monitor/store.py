"""Every score forgetmenot measures, kept: SQLite by default, PostgreSQL in production.

Rows are appended, never rewritten, except a run's own status line as it finishes. A run whose
monitor died stays `running` until `reap` closes it as `interrupted`, so a crash can never pass
for a complete measurement.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import UniqueConstraint, delete, event, func, text
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlmodel import Field, Session, SQLModel, col, create_engine, select

from monitor.errors import StoreError
from monitor.migrate import upgrade

RUN_STATUSES = ("running", "complete", "error", "interrupted")


def utcnow() -> datetime:
    return datetime.now(UTC)


class ModelVersion(SQLModel, table=True):
    """Every version ever measured. Those the monitor made itself (recovery retraining) also
    carry their weights' folder, the version they were made from and the action that made them:
    they join the policy file's versions (`monitor.versions`)."""

    __tablename__ = "model_version"
    __table_args__ = (UniqueConstraint("model", "version"),)
    id: int | None = Field(default=None, primary_key=True)
    model: str = Field(index=True)
    version: str
    source: str = ""
    created_at: datetime = Field(default_factory=utcnow)
    path: str | None = None
    parent: str | None = None
    action_id: int | None = None


class SuiteRecord(SQLModel, table=True):
    __tablename__ = "suite"
    __table_args__ = (UniqueConstraint("name", "content_hash"),)
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True)
    version: int
    capability: str
    content_hash: str
    created_at: datetime = Field(default_factory=utcnow)


class Run(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    model: str = Field(index=True)
    version: str = Field(index=True)
    suite_id: int = Field(foreign_key="suite.id", index=True)
    suite: str
    capability: str
    split: str = "probe"
    backend: str
    device: str
    dtype: str
    status: str = "running"
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    item_count: int = 0
    error_count: int = 0
    error: str | None = None
    holder: str | None = Field(default=None, index=True)


class RunKind(SQLModel, table=True):
    """A finished run's score per kind, kept so history and scrapes never re-scan item results."""

    __tablename__ = "run_kind"
    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="run.id", index=True)
    kind: str
    mean_score: float | None = None
    scored: int = 0
    errors: int = 0


class RunError(SQLModel, table=True):
    """A finished run's failed item measurements, counted per error kind."""

    __tablename__ = "run_error"
    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="run.id", index=True)
    error_kind: str
    count: int


class ItemResult(SQLModel, table=True):
    __tablename__ = "item_result"
    id: int | None = Field(default=None, primary_key=True)
    run_id: int | None = Field(default=None, foreign_key="run.id", index=True, nullable=False)
    item_id: str
    kind: str
    score: float | None = None
    correct: bool | None = None
    margin: float | None = None
    output: str | None = None
    latency_ms: float | None = None
    error_kind: str | None = None
    error: str | None = None


class Verdict(SQLModel, table=True):
    """A candidate judged against the baseline on one suite (one capability)."""

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow)
    model: str = Field(index=True)
    candidate: str = Field(index=True)
    baseline: str
    suite: str
    capability: str = Field(index=True)
    content_hash: str
    phase: str
    diagnosis: str
    reason: str
    muted: bool = False
    critical: bool = False
    candidate_runs: str = ""
    baseline_runs: str = ""
    drop: float | None = None
    low: float | None = None
    high: float | None = None
    p_value: float | None = None
    report: str | None = None


class VerdictKind(SQLModel, table=True):
    """The statistics behind a verdict, one row per kind it was measured as."""

    __tablename__ = "verdict_kind"
    id: int | None = Field(default=None, primary_key=True)
    verdict_id: int | None = Field(default=None, foreign_key="verdict.id", index=True, nullable=False)
    kind: str
    phase: str
    reason: str
    method: str = ""
    n: int = 0
    excluded: int = 0
    quarantined: int = 0
    baseline_score: float | None = None
    candidate_score: float | None = None
    drop: float | None = None
    low: float | None = None
    high: float | None = None
    p_value: float | None = None
    lost: int = 0
    gained: int = 0
    margin_drop: float | None = None
    margin_low: float | None = None
    margin_high: float | None = None


class FlakyItem(SQLModel, table=True):
    """An item whose result changed across repeated runs of one unchanged version."""

    __tablename__ = "flaky_item"
    __table_args__ = (UniqueConstraint("model", "version", "content_hash", "item_id", "kind"),)
    id: int | None = Field(default=None, primary_key=True)
    model: str = Field(index=True)
    version: str
    content_hash: str = Field(index=True)
    item_id: str
    kind: str
    runs: int
    flips: int
    created_at: datetime = Field(default_factory=utcnow)


class Heartbeat(SQLModel, table=True):
    """A monitor process saying it is alive; its runs are reaped when it falls silent."""

    holder: str = Field(primary_key=True)
    seen_at: datetime = Field(default_factory=utcnow)


class Claim(SQLModel, table=True):
    """One row per scheduled slot of work: the unique name makes it exactly-once across replicas."""

    name: str = Field(primary_key=True)
    holder: str
    claimed_at: datetime = Field(default_factory=utcnow)


class Action(SQLModel, table=True):
    """One step of the policy ladder, proposed, refused or carried out: the audit trail."""

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    model: str = Field(index=True)
    kind: str  # alert | rollback | retrain
    trigger: str  # verdict | manual
    verdict_id: int | None = Field(default=None, foreign_key="verdict.id")
    capability: str | None = None
    diagnosis: str | None = None
    from_version: str | None = None
    to_version: str | None = None
    status: str = "planned"  # planned | pending_approval | dry_run | done | refused | failed | rejected
    dry_run: bool = False
    reason: str = ""
    detail: str = ""
    actor: str = ""


class LiveVersion(SQLModel, table=True):
    """The registry deployer's pointer: which version of a model is live now."""

    __tablename__ = "live_version"
    model: str = Field(primary_key=True)
    version: str
    updated_at: datetime = Field(default_factory=utcnow)
    action_id: int | None = None


@dataclass(frozen=True)
class KindSummary:
    kind: str
    mean_score: float | None
    scored: int
    errors: int


class Store:
    """The one way in and out of the database; pass it around, never a global."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.engine = make_engine(url)
            upgrade(self.engine)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot open database {_redact(url)}: {exc.__class__.__name__}: "
                             f"{str(exc).splitlines()[0]}") from exc

    @contextmanager
    def session(self) -> Iterator[Session]:
        try:
            with Session(self.engine, expire_on_commit=False) as session:
                yield session
        except DBAPIError as exc:
            raise StoreError(f"database {_redact(self.url)} failed: {str(exc).splitlines()[0]}") from exc

    def close(self) -> None:
        self.engine.dispose()

    # -- registration ---------------------------------------------------------------------

    def register_version(self, model: str, version: str, source: str = "") -> ModelVersion:
        with self.session() as s:
            found = s.exec(select(ModelVersion).where(ModelVersion.model == model,
                                                      ModelVersion.version == version)).first()
            if found:
                return found
            row = ModelVersion(model=model, version=version, source=source)
            s.add(row)
            s.commit()
            return row

    def add_made_version(self, row: ModelVersion) -> ModelVersion:
        """Record a version the monitor built; its name must be new for the model."""
        with self.session() as s:
            taken = s.exec(select(ModelVersion).where(ModelVersion.model == row.model,
                                                      ModelVersion.version == row.version)).first()
            if taken:
                raise StoreError(f"{row.model} already has a version '{row.version}'")
            s.add(row)
            s.commit()
            return row

    def reset_actions(self) -> None:
        """Empty the audit trail, the live pointer, the claims and the versions the monitor made.
        Only for a throwaway copy: the full-loop demo starts every run from the same state."""
        with self.session() as s:
            for table in (Action, LiveVersion, Claim):
                s.exec(delete(table))
            s.exec(delete(ModelVersion).where(col(ModelVersion.path).is_not(None)))
            s.commit()

    def made_versions(self, model: str | None = None) -> list[ModelVersion]:
        """Versions the monitor built (they have a path), oldest first."""
        with self.session() as s:
            query = select(ModelVersion).where(ModelVersion.path.is_not(None))  # type: ignore[union-attr]
            if model:
                query = query.where(ModelVersion.model == model)
            return list(s.exec(query.order_by(ModelVersion.id)))  # type: ignore[arg-type]

    def ensure_suite(self, name: str, version: int, capability: str, content_hash: str) -> SuiteRecord:
        with self.session() as s:
            found = s.exec(select(SuiteRecord).where(SuiteRecord.name == name,
                                                     SuiteRecord.content_hash == content_hash)).first()
            if found:
                return found
            row = SuiteRecord(name=name, version=version, capability=capability,
                              content_hash=content_hash)
            s.add(row)
            s.commit()
            return row

    # -- runs -----------------------------------------------------------------------------

    def start_run(self, **fields: Any) -> Run:
        with self.session() as s:
            run = Run(**fields)
            s.add(run)
            s.commit()
            return run

    def add_results(self, run_id: int, results: Iterable[ItemResult]) -> None:
        with self.session() as s:
            for result in results:
                result.run_id = run_id
                s.add(result)
            s.commit()

    def finish_run(self, run_id: int, status: str, error: str | None = None) -> Run:
        if status not in RUN_STATUSES:
            raise ValueError(f"unknown run status {status!r}")
        with self.session() as s:
            run = s.get(Run, run_id)
            if run is None:
                raise StoreError(f"run {run_id} does not exist")
            counts = s.exec(select(func.count(), func.count(col(ItemResult.error_kind)))
                            .where(ItemResult.run_id == run_id)).one()
            run.item_count, run.error_count = int(counts[0]), int(counts[1])
            run.status, run.error, run.finished_at = status, error, utcnow()
            s.add(run)
            _add_aggregates(s, run_id)
            s.commit()
            return run

    def beat(self, holder: str) -> None:
        with self.session() as s:
            row = s.get(Heartbeat, holder) or Heartbeat(holder=holder)
            row.seen_at = utcnow()
            s.add(row)
            s.commit()

    def reap(self, silent_for: timedelta) -> int:
        """Mark interrupted the running runs of monitors silent for `silent_for`; returns how many."""
        cutoff = utcnow() - silent_for
        alive = sa_select(col(Heartbeat.holder)).where(col(Heartbeat.seen_at) >= cutoff)
        with self.session() as s:
            stale = s.exec(select(Run).where(Run.status == "running", col(Run.holder).is_not(None),
                                             col(Run.holder).not_in(alive))).all()
            for run in stale:
                run.status, run.finished_at = "interrupted", utcnow()
                run.error = f"monitor {run.holder} stopped beating while this run was in progress"
                s.add(run)
            s.commit()
            return len(stale)

    # -- reading --------------------------------------------------------------------------

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

    def latest_complete_run(self, model: str, version: str, suite_hash: str, backend: str,
                            dtype: str) -> Run | None:
        """The newest complete run of exactly this suite content on this backend and dtype."""
        query = (select(Run).join(SuiteRecord, col(Run.suite_id) == col(SuiteRecord.id))
                 .where(Run.model == model, Run.version == version, Run.status == "complete",
                        SuiteRecord.content_hash == suite_hash, Run.backend == backend,
                        Run.dtype == dtype)
                 .order_by(col(Run.id).desc()))
        with self.session() as s:
            return s.exec(query).first()

    def finished_runs(self, model: str, version: str, content_hash: str) -> list[Run]:
        """Runs of exactly this suite content that ended (complete, error or interrupted), oldest first."""
        query = (select(Run).join(SuiteRecord, col(Run.suite_id) == col(SuiteRecord.id))
                 .where(Run.model == model, Run.version == version, Run.status != "running",
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

    def summaries(self, run_ids: Sequence[int]) -> dict[int, list[KindSummary]]:
        """Mean score per kind for each run, computed in the database."""
        out: dict[int, list[KindSummary]] = {run_id: [] for run_id in run_ids}
        with self.session() as s:
            for run_id, summary in _kind_summaries(s, run_ids):
                out[run_id].append(summary)
        return out


    @contextmanager
    def exclusive(self, key: int) -> Iterator[None]:
        """One process at a time across replicas: a PostgreSQL advisory lock, or for a SQLite file
        an exclusive lock on a file beside it (SQLite replicas share one host anyway)."""
        if self.engine.dialect.name != "postgresql":
            database = self.engine.url.database
            if not database or database == ":memory:":
                yield
                return
            import fcntl

            with open(f"{database}.lock-{key}", "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
            return
        with self.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                conn.commit()

    def claim(self, name: str, holder: str) -> bool:
        """True for exactly one caller per `name`, whichever replica or process asks first."""
        try:
            with Session(self.engine) as s:
                s.add(Claim(name=name, holder=holder))
                s.commit()
            return True
        except IntegrityError:
            return False
        except DBAPIError as exc:
            raise StoreError(f"database {_redact(self.url)} failed: {str(exc).splitlines()[0]}") from exc

    # -- verdicts and calibration ---------------------------------------------------------

    def save_verdict(self, verdict: Verdict, kinds: Iterable[VerdictKind]) -> Verdict:
        with self.session() as s:
            s.add(verdict)
            s.flush()
            for row in kinds:
                row.verdict_id = verdict.id
                s.add(row)
            s.commit()
            return verdict

    def set_report(self, verdict_id: int, path: str) -> None:
        with self.session() as s:
            verdict = s.get(Verdict, verdict_id)
            if verdict is None:
                raise StoreError(f"verdict {verdict_id} does not exist")
            verdict.report = path
            s.add(verdict)
            s.commit()

    def get_verdict(self, verdict_id: int) -> tuple[Verdict, list[VerdictKind]] | None:
        with self.session() as s:
            verdict = s.get(Verdict, verdict_id)
        if verdict is None:
            return None
        return verdict, self.verdict_kinds([verdict_id]).get(verdict_id, [])

    def verdict_kinds(self, verdict_ids: Sequence[int]) -> dict[int, list[VerdictKind]]:
        """The per-kind statistics of many verdicts in one query."""
        query = (select(VerdictKind).where(col(VerdictKind.verdict_id).in_(list(verdict_ids)))
                 .order_by(col(VerdictKind.id)))
        found: dict[int, list[VerdictKind]] = {}
        with self.session() as s:
            for row in s.exec(query).all():
                found.setdefault(row.verdict_id or 0, []).append(row)
        return found

    def verdicts(self, model: str | None = None, candidate: str | None = None,
                 capability: str | None = None) -> list[Verdict]:
        query = select(Verdict).order_by(col(Verdict.id))
        for column, value in ((Verdict.model, model), (Verdict.candidate, candidate),
                              (Verdict.capability, capability)):
            if value is not None:
                query = query.where(column == value)
        with self.session() as s:
            return list(s.exec(query).all())

    # -- actions and the live pointer -----------------------------------------------------

    def add_action(self, action: Action) -> Action:
        with self.session() as s:
            s.add(action)
            s.commit()
            return action

    def finish_action(self, action_id: int, status: str, detail: str = "", actor: str = "") -> Action:
        changes: dict[str, Any] = {"status": status, "finished_at": utcnow()}
        changes |= {"detail": detail} if detail else {}
        return self.revise_action(action_id, **changes | ({"actor": actor} if actor else {}))

    def revise_action(self, action_id: int, **changes: Any) -> Action:
        with self.session() as s:
            action = s.get(Action, action_id)
            if action is None:
                raise StoreError(f"action {action_id} does not exist")
            for name, value in changes.items():
                setattr(action, name, value)
            s.add(action)
            s.commit()
            return action

    def get_action(self, action_id: int) -> Action | None:
        with self.session() as s:
            return s.get(Action, action_id)

    def actions(self, model: str | None = None, since: datetime | None = None) -> list[Action]:
        query = select(Action).order_by(col(Action.id))
        if model is not None:
            query = query.where(Action.model == model)
        if since is not None:
            query = query.where(col(Action.created_at) >= since)
        with self.session() as s:
            return list(s.exec(query).all())

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

    def record_flaky(self, rows: Iterable[FlakyItem]) -> int:
        """Replace the flakiness record of each (model, version, content, item, kind) given."""
        count = 0
        with self.session() as s:
            for row in rows:
                old = s.exec(select(FlakyItem).where(
                    FlakyItem.model == row.model, FlakyItem.version == row.version,
                    FlakyItem.content_hash == row.content_hash, FlakyItem.item_id == row.item_id,
                    FlakyItem.kind == row.kind)).first()
                if old is not None:
                    s.delete(old)
                    s.flush()
                s.add(row)
                count += 1
            s.commit()
        return count

    def flaky(self, model: str, content_hash: str, versions: Sequence[str]) -> set[tuple[str, str]]:
        """(item id, kind) pairs seen to flip on any of `versions`: quarantined from verdicts."""
        query = select(FlakyItem).where(FlakyItem.model == model, FlakyItem.content_hash == content_hash,
                                        col(FlakyItem.version).in_(list(versions)), FlakyItem.flips > 0)
        with self.session() as s:
            return {(row.item_id, row.kind) for row in s.exec(query).all()}


def _kind_summaries(s: Session, run_ids: Sequence[int]) -> list[tuple[int, KindSummary]]:
    query = (sa_select(col(ItemResult.run_id), col(ItemResult.kind), func.avg(ItemResult.score),
                       func.count(col(ItemResult.score)), func.count(col(ItemResult.error_kind)))
             .where(col(ItemResult.run_id).in_(list(run_ids)))
             .group_by(col(ItemResult.run_id), col(ItemResult.kind)))
    return [(int(run_id), KindSummary(kind, None if mean is None else float(mean), int(scored), int(errors)))
            for run_id, kind, mean, scored, errors in s.execute(query).all()]


def _add_aggregates(s: Session, run_id: int) -> None:
    for _, summary in _kind_summaries(s, [run_id]):
        s.add(RunKind(run_id=run_id, kind=summary.kind, mean_score=summary.mean_score,
                      scored=summary.scored, errors=summary.errors))
    per_error = sa_select(col(ItemResult.error_kind), func.count()).where(
        col(ItemResult.run_id) == run_id, col(ItemResult.error_kind).is_not(None)).group_by(
        col(ItemResult.error_kind))
    for error_kind, count in s.execute(per_error).all():
        s.add(RunError(run_id=run_id, error_kind=str(error_kind), count=int(count)))


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    """WAL lets the exporter read while a run writes; foreign keys are off by default in SQLite."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable url>"
