"""A hash of each task's raw JSON, so that a pull notices changes without reading raw back.

Rows stored before this revision have no hash: the next pull rewrites each of them once.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from lsq_sync.store import ddl

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    ddl.add_column("lsq_tasks", sa.Column("raw_hash", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("lsq_tasks") as batch:
        batch.drop_column("raw_hash")
