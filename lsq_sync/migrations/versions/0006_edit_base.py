"""Three-way merge on push: each edit keeps the synced state it was made against (`base`)
and the run that last tried it; runs count the edits they held as conflicts.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from lsq_sync.store import ddl
from lsq_sync.store.types import json_type

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    ddl.add_column("lsq_task_edits", sa.Column("base", json_type()))
    ddl.add_column("lsq_task_edits", sa.Column("run_id", sa.Integer()))
    ddl.add_column("lsq_sync_runs", sa.Column("edits_conflict", sa.Integer(), nullable=False,
                                              server_default=sa.text("0")))


def downgrade() -> None:
    with op.batch_alter_table("lsq_sync_runs") as batch:
        batch.drop_column("edits_conflict")
    with op.batch_alter_table("lsq_task_edits") as batch:
        batch.drop_column("run_id")
        batch.drop_column("base")
