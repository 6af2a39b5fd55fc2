"""the diagnosis's second witness on each verdict: `verdict.witnesses` (agree, disagree, one or
none: how many signals the diagnosis rests on, and whether they agree) and `verdict.reelicited`
(the re-elicited generation judged, as JSON). Both are NULL on the verdicts stored before: their
diagnosis heard no second witness, and nothing is made up for them after the fact.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-10 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("verdict") as batch:
        batch.add_column(sa.Column("witnesses", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch.add_column(sa.Column("reelicited", sqlmodel.sql.sqltypes.AutoString(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("verdict") as batch:
        batch.drop_column("reelicited")
        batch.drop_column("witnesses")
