"""Alembic environment: the schema is SQLModel's metadata (monitor.store)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

import monitor.store  # noqa: F401  (registers every table on SQLModel.metadata)
from monitor.store.migrations import MIGRATION_LOCK

config = context.config
target_metadata = SQLModel.metadata


def _migrate(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


given = config.attributes.get("connection")
if given is not None:
    _migrate(given)
else:
    with create_engine(config.get_main_option("sqlalchemy.url") or "").begin() as connection:
        _migrate(connection)
