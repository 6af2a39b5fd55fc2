"""Opening a database: the engine, its sessions, and errors that never show a password."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError, StatementError
from sqlmodel import Session, create_engine

from monitor.errors import StoreError, StoreRefused
from monitor.store.migrate import upgrade

# What the database says about the data itself, whenever it is sent: no retry gets it in. Every
# other driver error (a lost connection, a timeout, a server shutting down) may pass.
REFUSALS = (DataError, IntegrityError)


class Database:
    """An open database at the current schema; the store's concerns are mixins over it."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.engine = make_engine(url)
            upgrade(self.engine)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot open database {redact(url)}: {exc.__class__.__name__}: "
                             f"{str(exc).splitlines()[0]}") from exc

    @contextmanager
    def session(self) -> Iterator[Session]:
        try:
            with Session(self.engine, expire_on_commit=False) as session:
                yield session
        except DBAPIError as exc:
            raise self.failed(exc) from exc
        except (StatementError, UnicodeEncodeError) as exc:
            raise self.refused(exc) from exc

    def failed(self, exc: DBAPIError) -> StoreError:
        """The driver's error as forgetmenot says it: which database (no password), first line only."""
        if isinstance(exc, REFUSALS) and not exc.connection_invalidated:
            return self.refused(exc)
        return StoreError(f"database {redact(self.url)} failed: {str(exc).splitlines()[0]}")

    def refused(self, exc: Exception) -> StoreRefused:
        """A value the driver could not even send (text no UTF-8 encoder takes) is refused like one
        the server turned down."""
        first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        return StoreRefused(f"database {redact(self.url)} refused the data: {first}")

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


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


def redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable url>"
