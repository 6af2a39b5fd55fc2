"""versions the monitor made (recovery retraining): path, parent, action

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 19:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('model_version') as batch:
        batch.add_column(sa.Column('path', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch.add_column(sa.Column('parent', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch.add_column(sa.Column('action_id', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('model_version') as batch:
        batch.drop_column('action_id')
        batch.drop_column('parent')
        batch.drop_column('path')
