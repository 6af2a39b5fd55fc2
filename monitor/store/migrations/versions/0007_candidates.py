"""candidates registered at runtime (`POST /api/v1/models/{model}/candidates`, `forgetmenot
candidate add`): their version spec kept as JSON on `model_version`, so every replica watches them

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 15:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('model_version') as batch:
        batch.add_column(sa.Column('spec', sqlmodel.sql.sqltypes.AutoString(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('model_version') as batch:
        batch.drop_column('spec')
