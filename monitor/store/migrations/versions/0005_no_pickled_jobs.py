"""APScheduler's job table dropped: jobs are rebuilt from the policy in memory at every start, and
a table of pickled jobs meant that write access to the database was code execution on every replica

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 08:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table('apscheduler_jobs'):
        op.drop_table('apscheduler_jobs')


def downgrade() -> None:
    """Nothing to restore: an older monitor recreates its job table when it starts."""
