"""Alembic migrations of the monitor's schema.

`HEAD` is the newest revision, written here so that opening a database already at it needs one
query and no Alembic script loading (a test checks it against the scripts)."""

HEAD = "0004"
