"""Claims on tasks whose edits a push is sending.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from lsq_sync.store import ddl
from lsq_sync.store.types import UTCDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    ddl.create_table(
        "lsq_edit_claims",
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("claimed_until", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("task_id", name="pk_lsq_edit_claims"),
    )


def downgrade() -> None:
    op.drop_table("lsq_edit_claims")
