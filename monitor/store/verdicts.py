"""Verdicts with the statistics behind them, and the items quarantined as flaky."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlmodel import col, select

from monitor.errors import StoreError
from monitor.store.engine import Database
from monitor.store.tables import FlakyItem, Verdict, VerdictKind


class Verdicts(Database):
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
                 capability: str | None = None, newest: int | None = None,
                 baseline: str | None = None, suite: str | None = None,
                 content_hash: str | None = None) -> list[Verdict]:
        """Oldest first; `newest` keeps only that many of the latest, cut in SQL."""
        query = select(Verdict).order_by(col(Verdict.id).desc())
        for column, value in ((Verdict.model, model), (Verdict.candidate, candidate),
                              (Verdict.capability, capability), (Verdict.baseline, baseline),
                              (Verdict.suite, suite), (Verdict.content_hash, content_hash)):
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
