"""Alembic migrations of the monitor's schema.

`HEAD` is the newest revision, written here so that opening a database already at it needs one
query and no Alembic script loading (a test checks it against the scripts)."""

HEAD = "0010"
# "fmn": a PostgreSQL advisory lock, so replicas starting together migrate one at a time.
MIGRATION_LOCK = 0x666D6E
