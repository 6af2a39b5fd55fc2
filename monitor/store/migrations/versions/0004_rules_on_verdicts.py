"""the rules each verdict was judged by (tolerance, confidence, critical, muted, limits, ladders)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 21:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('verdict') as batch:
        batch.add_column(sa.Column('rules', sqlmodel.sql.sqltypes.AutoString(), nullable=False,
                                   server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('verdict') as batch:
        batch.drop_column('rules')
