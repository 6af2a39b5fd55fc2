"""The versions and suite contents the store has seen: every score refers to one of each."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel, or_, select

from monitor.errors import StoreError
from monitor.store.engine import Database
from monitor.store.tables import ModelVersion, SuiteRecord

MADE = ModelVersion.path.is_not(None)  # type: ignore[union-attr]
REGISTERED = ModelVersion.spec.is_not(None)  # type: ignore[union-attr]
Row = TypeVar("Row", bound=SQLModel)


class Registry(Database):
    def register_version(self, model: str, version: str, source: str = "") -> ModelVersion:
        query = select(ModelVersion).where(ModelVersion.model == model, ModelVersion.version == version)
        return self._found_or_added(query, lambda: ModelVersion(model=model, version=version, source=source))

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

    def made_versions(self, model: str | None = None) -> list[ModelVersion]:
        """Versions the monitor built (they have a path), oldest first."""
        return self._versions(MADE, model)

    def candidates(self, model: str | None = None) -> list[ModelVersion]:
        """Versions registered at runtime to be judged before they take traffic, oldest first."""
        return self._versions(REGISTERED, model)

    def added_versions(self) -> list[ModelVersion]:
        """Both, in one query, oldest first: what joins the policy file's versions."""
        return self._versions(or_(MADE, REGISTERED))

    def retire_candidate(self, model: str, version: str, source: str) -> ModelVersion | None:
        """The candidate's spec dropped (no replica watches it from then on), its row kept."""
        with self.session() as s:
            row = s.exec(select(ModelVersion).where(ModelVersion.model == model,
                                                    ModelVersion.version == version, REGISTERED)).first()
            if row is None:
                return None
            row.spec, row.source = None, source
            s.add(row)
            s.commit()
            s.refresh(row)
            return row

    def versions_seen(self, model: str) -> list[ModelVersion]:
        """Every version of `model` the store has a row for: measured, made or registered."""
        return self._versions(ModelVersion.model == model)

    def _versions(self, where: Any, model: str | None = None) -> list[ModelVersion]:
        query = select(ModelVersion).where(where)
        if model:
            query = query.where(ModelVersion.model == model)
        with self.session() as s:
            return list(s.exec(query.order_by(ModelVersion.id)))  # type: ignore[arg-type]

    def ensure_suite(self, name: str, version: int, capability: str, content_hash: str) -> SuiteRecord:
        query = select(SuiteRecord).where(SuiteRecord.name == name, SuiteRecord.content_hash == content_hash)
        return self._found_or_added(query, lambda: SuiteRecord(
            name=name, version=version, capability=capability, content_hash=content_hash))

    def _found_or_added(self, query: Any, make: Callable[[], Row]) -> Row:
        """The row `query` finds, added first if there is none. Runs measure at the same time, so
        two may add the same row at once: the one whose insert hits the unique key reads the
        other's."""
        with self.session() as s:
            found = s.exec(query).first()
            if found:
                return cast(Row, found)
            row = make()
            s.add(row)
            try:
                s.commit()
                return row
            except IntegrityError:
                s.rollback()
            return cast(Row, s.exec(query).one())
