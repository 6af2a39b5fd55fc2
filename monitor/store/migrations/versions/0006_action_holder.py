"""the process carrying out each action (`holder`), so an action whose process died is reaped
instead of staying `planned` or `deploying` for ever

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 08:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('action') as batch:
        batch.add_column(sa.Column('holder', sqlmodel.sql.sqltypes.AutoString(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('action') as batch:
        batch.drop_column('holder')
