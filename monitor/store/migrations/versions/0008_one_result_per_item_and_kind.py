"""one item result per run, item and kind (`uq_item_result_run_item_kind`), so a spool record
replayed by two processes at once is stored once. Results stored twice before the key existed are
dropped, the first of each kept, and the finished runs they belong to are counted and summed again.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

KEY = ['run_id', 'item_id', 'kind']
TWICE = sa.text("SELECT DISTINCT run_id FROM item_result GROUP BY run_id, item_id, kind HAVING COUNT(*) > 1")
KEEP_FIRST = sa.text("DELETE FROM item_result WHERE id NOT IN "
                     "(SELECT MIN(id) FROM item_result GROUP BY run_id, item_id, kind)")
# What `finish_run` sums, made again from the rows kept; a running run has no sums yet.
RECOUNT = (
    sa.text("UPDATE run SET item_count = (SELECT COUNT(*) FROM item_result WHERE run_id = :run), "
            "error_count = (SELECT COUNT(error_kind) FROM item_result WHERE run_id = :run) "
            "WHERE id = :run AND status != 'running'"),
    sa.text("DELETE FROM run_kind WHERE run_id = :run"),
    sa.text("DELETE FROM run_error WHERE run_id = :run"),
    sa.text("INSERT INTO run_kind (run_id, kind, mean_score, scored, errors) "
            "SELECT run_id, kind, AVG(score), COUNT(score), COUNT(error_kind) FROM item_result "
            "WHERE run_id = :run AND run_id IN (SELECT id FROM run WHERE status != 'running') "
            "GROUP BY run_id, kind"),
    sa.text("INSERT INTO run_error (run_id, error_kind, count) "
            "SELECT run_id, error_kind, COUNT(*) FROM item_result "
            "WHERE run_id = :run AND error_kind IS NOT NULL "
            "AND run_id IN (SELECT id FROM run WHERE status != 'running') GROUP BY run_id, error_kind"),
)


def upgrade() -> None:
    connection = op.get_bind()
    runs = connection.execute(TWICE).scalars().all()
    connection.execute(KEEP_FIRST)
    for run in runs:
        for statement in RECOUNT:
            connection.execute(statement, {"run": run})
    with op.batch_alter_table('item_result') as batch:
        batch.create_unique_constraint('uq_item_result_run_item_kind', KEY)


def downgrade() -> None:
    with op.batch_alter_table('item_result') as batch:
        batch.drop_constraint('uq_item_result_run_item_kind', type_='unique')
