"""Schema migrations with Alembic: `forgetmenot db upgrade`, and on open for the embedded default."""

from __future__ import annotations

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import inspect
from sqlalchemy.engine import Engine

from monitor.errors import StoreError


def alembic_config(url: str) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", "monitor.store:migrations")
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision`; refuse a database made before migrations existed."""
    tables = set(inspect(engine).get_table_names())
    if tables & {"run", "item_result"} and "alembic_version" not in tables:
        raise StoreError("this database was created by a pre-release forgetmenot without migrations; "
                         "move it aside and let forgetmenot create a new one")
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def current(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
