"""Schema migrations with Alembic: `forgetmenot db upgrade`, and on open for the embedded default."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

from monitor.errors import StoreError
from monitor.store.migrations import HEAD, MIGRATION_LOCK

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig


def alembic_config(url: str) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", "monitor.store:migrations")
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision`; refuse a database made before migrations existed. A
    database already at the head costs one query, and Alembic is not even imported: every
    command opens the store, and most find it current."""
    tables = set(inspect(engine).get_table_names())
    if revision == "head" and "alembic_version" in tables and current(engine) == HEAD:
        return
    if revision == "head" and not tables and (create_at_head(engine) or current(engine) == HEAD):
        return  # made here, or by a replica that won the race
    if tables & {"run", "item_result"} and "alembic_version" not in tables:
        raise StoreError("this database was created by a pre-release forgetmenot without migrations; "
                         "move it aside and let forgetmenot create a new one")
    from alembic import command

    config = alembic_config(engine.url.render_as_string(hide_password=False))
    _refuse_unknown_revision(config, current(engine))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def _refuse_unknown_revision(config: AlembicConfig, found: str | None) -> None:
    """A schema newer than this code (a newer forgetmenot shares the database) is one clear error,
    never Alembic's traceback, and never a downgrade nobody asked for."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    if found is None:
        return
    try:
        ScriptDirectory.from_config(config).get_revision(found)
    except CommandError as exc:
        raise StoreError(f"the database's schema is at revision '{found[:40]}', which this forgetmenot "
                         f"does not know (its newest is {HEAD}): a newer forgetmenot upgraded it. Run "
                         "that version here, or point this one at another database") from exc


def create_at_head(engine: Engine) -> bool:
    """A new database gets the tables as the models declare them, stamped at the head, as
    Alembic's own guide suggests: one transaction instead of replaying every migration. A test
    checks that the models and the replayed migrations give the same schema. Under the migration
    lock, like a migration; False if another replica made the tables first."""
    from sqlmodel import SQLModel

    from monitor.store import tables  # noqa: F401  (registers the tables on SQLModel.metadata)

    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
        if inspect(connection).get_table_names():
            return False
        SQLModel.metadata.create_all(connection)
        connection.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
                                "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"))
        connection.execute(text("INSERT INTO alembic_version (version_num) VALUES (:head)"), {"head": HEAD})
    return True


def current(engine: Engine) -> str | None:
    """The revision the database is at; None for a database Alembic has not touched."""
    if "alembic_version" not in inspect(engine).get_table_names():
        return None
    with engine.connect() as connection:
        found = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return None if found is None else str(found)
