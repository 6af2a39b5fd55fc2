"""Verdicts with the statistics behind them, and the items quarantined as flaky.

A verdict is one measurement judged: the runs it compares and the rules it was judged by
(`measurement_of`). The database holds each measurement once, so a verdict asked for again, by a
person or by another replica at the same moment, is the one already stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from monitor.errors import StoreError
from monitor.store.engine import Database
from monitor.store.tables import FlakyItem, Verdict, VerdictKind

_INSERTS: dict[str, Callable[..., Any]] = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def measurement_of(candidate_runs: str, baseline_runs: str, rules: str, witness_run: str = "") -> str:
    """The identity of a verdict: its runs (as stored, comma-separated ids) and its rules (JSON),
    hashed to a width any database indexes. Migration 0009 keeps a copy of this formula for the
    verdicts stored before it, and a test holds the two equal. A verdict whose diagnosis heard a
    second witness (`witness_run`, the re-elicited run) measured that too: it is added only where
    there is one, so every verdict without keeps the identity it had."""
    parts = (candidate_runs, baseline_runs, rules, *((witness_run,) if witness_run else ()))
    judged = "\n".join(parts)
    return hashlib.sha256(judged.encode()).hexdigest()


class Verdicts(Database):
    def save_verdict(self, verdict: Verdict, kinds: Iterable[VerdictKind]) -> Verdict:
        """Store a verdict and its statistics; for a measurement stored already, return that
        verdict instead. The unique key decides within the insert, so replicas judging the same
        runs at once cannot both find it missing and both add it."""
        with self.session() as s:
            verdict_id = _insert_once(s, verdict)
            if verdict_id is None:
                return _stored(s, verdict.measurement)
            verdict.id = verdict_id
            for row in kinds:
                row.verdict_id = verdict_id
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
                 capability: str | None = None, newest: int | None = None,
                 baseline: str | None = None, suite: str | None = None,
                 content_hash: str | None = None, phase: str | None = None) -> list[Verdict]:
        """Oldest first; `newest` keeps only that many of the latest, cut in SQL."""
        query = select(Verdict).order_by(col(Verdict.id).desc())
        for column, value in ((Verdict.model, model), (Verdict.candidate, candidate),
                              (Verdict.capability, capability), (Verdict.baseline, baseline),
                              (Verdict.suite, suite), (Verdict.content_hash, content_hash),
                              (Verdict.phase, phase)):
            if value is not None:
                query = query.where(column == value)
        if newest is not None:
            query = query.limit(newest)
        with self.session() as s:
            return list(reversed(s.exec(query).all()))

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


def _insert_once(s: Session, verdict: Verdict) -> int | None:
    """The new verdict's id; None when its measurement is stored already. A verdict without a
    measurement (NULL) never conflicts."""
    row = verdict.model_dump(exclude={"id"})
    insert = _INSERTS[s.get_bind().dialect.name](Verdict).values(row)
    once = insert.on_conflict_do_nothing(index_elements=[col(Verdict.measurement)])
    found: int | None = s.execute(once.returning(col(Verdict.id))).scalar()
    return found


def _stored(s: Session, measurement: str | None) -> Verdict:
    """The verdict stored for a measurement; the conflicting insert has committed (PostgreSQL
    waits for it before it reports the conflict), so this statement sees it."""
    return s.exec(select(Verdict).where(Verdict.measurement == measurement)).one()
