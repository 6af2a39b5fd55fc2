"""one verdict per measurement (`uq_verdict_measurement`): `verdict.measurement` identifies a
verdict by the runs it compares and the rules it was judged by, so judging them again, or two
replicas judging them at once, returns the verdict stored. Verdicts judged more than once before
the key existed all stay readable: the first of each measurement gets its identity, the later
copies keep none (NULL, which a unique key allows any number of), and the ladder counts each
measurement once however many rows it has. A verdict without candidate runs names no
measurement and gets none.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-09 10:00:00
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

# The first verdict of each measurement; streamed, since a monitor keeps every verdict it made.
FIRSTS = sa.text("SELECT MIN(id), candidate_runs, baseline_runs, rules FROM verdict "
                 "WHERE candidate_runs != '' GROUP BY candidate_runs, baseline_runs, rules"
                 ).execution_options(stream_results=True)
IDENTIFY = sa.text("UPDATE verdict SET measurement = :measurement WHERE id = :id")


def measurement_of(candidate_runs: str, baseline_runs: str, rules: str) -> str:
    """`monitor.store.verdicts.measurement_of` as this revision knows it: a migration must mean
    the same whatever the code becomes, and a test holds the two equal."""
    return hashlib.sha256("\n".join((candidate_runs, baseline_runs, rules)).encode()).hexdigest()


def upgrade() -> None:
    with op.batch_alter_table('verdict') as batch:
        batch.add_column(sa.Column('measurement', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch.create_unique_constraint('uq_verdict_measurement', ['measurement'])
    connection = op.get_bind()
    identities = [{"measurement": measurement_of(candidate_runs, baseline_runs, rules), "id": first}
                  for first, candidate_runs, baseline_runs, rules in connection.execute(FIRSTS)]
    if identities:
        connection.execute(IDENTIFY, identities)


def downgrade() -> None:
    with op.batch_alter_table('verdict') as batch:
        batch.drop_constraint('uq_verdict_measurement', type_='unique')
        batch.drop_column('measurement')
