"""The tables: every score, verdict and action, as rows that are appended and never rewritten
(a run's own status line as it finishes is the one exception).

Columns hold plain strings; the values are those of `monitor.vocabulary`. Text that comes from
outside (a model's answer, an endpoint's error, a deployer's reply) is `FreeText`: stored whatever
it holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import UniqueConstraint
from sqlalchemy.types import TypeDecorator
from sqlmodel import AutoString, Field, SQLModel

from monitor.vocabulary import ActionStatus, RunStatus

# NUL, which PostgreSQL text cannot hold, and UTF-16 surrogates, which no UTF-8 encoder takes alone
# (a byte-level decoder can leave one in an answer).
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def utcnow() -> datetime:
    return datetime.now(UTC)


def storable(text: str) -> str:
    """`text` with each character no database here can hold written as its Python escape (`\\x00`,
    `\\ud800`): visible to whoever reads it, and the same on SQLite and PostgreSQL."""
    return UNSTORABLE.sub(_escape, text)


def _escape(found: re.Match[str]) -> str:
    return found.group().encode("unicode_escape").decode("ascii")


class FreeText(TypeDecorator[str]):
    """A text column that takes any string: what a model or a server says is data, never a reason
    to lose a run. Escaped as it is written, so queries, inserts and updates all agree; the column
    itself is the plain string type, so the schema is unchanged."""

    impl = AutoString
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else storable(value)


class ModelVersion(SQLModel, table=True):
    """Every version ever measured. Those the monitor made itself (recovery retraining) also
    carry their weights' folder, the version they were made from and the action that made them;
    candidates registered at runtime carry their version spec as JSON (`spec`). Both join the
    policy file's versions (`monitor.store.versions`)."""

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
    spec: str | None = None


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
    status: str = RunStatus.RUNNING
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    item_count: int = 0
    error_count: int = 0
    error: str | None = Field(default=None, sa_type=FreeText)
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
    """One item measured as one kind in one run: a run holds each (item, kind) once, so a record
    replayed twice, or by two processes at once, cannot count twice."""

    __tablename__ = "item_result"
    __table_args__ = (UniqueConstraint("run_id", "item_id", "kind", name="uq_item_result_run_item_kind"),)
    id: int | None = Field(default=None, primary_key=True)
    run_id: int | None = Field(default=None, foreign_key="run.id", index=True, nullable=False)
    item_id: str
    kind: str
    score: float | None = None
    correct: bool | None = None
    margin: float | None = None
    output: str | None = Field(default=None, sa_type=FreeText)
    latency_ms: float | None = None
    error_kind: str | None = None
    error: str | None = Field(default=None, sa_type=FreeText)


class Verdict(SQLModel, table=True):
    """A candidate judged against the baseline on one suite (one capability).

    `measurement` identifies what was judged: the runs compared and the rules judged by
    (`monitor.store.verdicts.measurement_of`). It is unique, so judging those runs again, or two
    replicas judging them at once, stores one verdict. It is NULL on a verdict that names no runs
    and on the later copies of a measurement judged more than once before schema 0009, which
    stay readable."""

    __table_args__ = (UniqueConstraint("measurement", name="uq_verdict_measurement"),)
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
    reason: str = Field(sa_type=FreeText)
    muted: bool = False
    critical: bool = False
    candidate_runs: str = ""
    baseline_runs: str = ""
    drop: float | None = None
    low: float | None = None
    high: float | None = None
    p_value: float | None = None
    report: str | None = None
    # The Rules it was judged by, as JSON: a policy edit never rewrites history. The server default
    # is migration 0004's, which gave verdicts made before it an empty string.
    rules: str = Field(default="", sa_column_kwargs={"server_default": ""})
    measurement: str | None = None
    # The diagnosis's witnesses (agree, disagree, one, none; None where nothing was diagnosed), and
    # the second one, re-elicitation, as JSON (`Reelicited.to_json`): None where it was not heard.
    witnesses: str | None = None
    reelicited: str | None = Field(default=None, sa_type=FreeText)


class VerdictKind(SQLModel, table=True):
    """The statistics behind a verdict, one row per kind it was measured as."""

    __tablename__ = "verdict_kind"
    id: int | None = Field(default=None, primary_key=True)
    verdict_id: int | None = Field(default=None, foreign_key="verdict.id", index=True, nullable=False)
    kind: str
    phase: str
    reason: str = Field(sa_type=FreeText)
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
    kind: str  # an ActionKind
    trigger: str  # a TriggeredBy
    verdict_id: int | None = Field(default=None, foreign_key="verdict.id")
    capability: str | None = None
    diagnosis: str | None = None
    from_version: str | None = None
    to_version: str | None = None
    status: str = ActionStatus.PLANNED  # an ActionStatus
    dry_run: bool = False
    reason: str = Field(default="", sa_type=FreeText)
    detail: str = Field(default="", sa_type=FreeText)
    actor: str = ""
    holder: str | None = None  # the process carrying it out (host:pid): reaped if it falls silent


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
