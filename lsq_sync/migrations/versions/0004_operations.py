"""Operations: run locks, a rate budget shared by processes, per-lead errors.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from lsq_sync.store import ddl
from lsq_sync.store.types import UTCDateTime

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    ddl.create_table(
        "lsq_locks",
        sa.Column("name", sa.String(16), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("acquired_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_lsq_locks"),
    )
    ddl.create_table(
        "lsq_rate_buckets",
        sa.Column("bucket", sa.String(64), nullable=False),
        sa.Column("touched", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", name="pk_lsq_rate_buckets"),
    )
    ddl.create_table(
        "lsq_rate_slots",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("bucket", sa.String(64), nullable=False),
        sa.Column("sent_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_lsq_rate_slots"),
    )
    ddl.create_index("ix_lsq_rate_slots_bucket_sent_at", "lsq_rate_slots", ["bucket", "sent_at"])
    ddl.add_column("lsq_run_leads", sa.Column("error", sa.Text()))


def downgrade() -> None:
    with op.batch_alter_table("lsq_run_leads") as batch:
        batch.drop_column("error")
    op.drop_index("ix_lsq_rate_slots_bucket_sent_at", table_name="lsq_rate_slots")
    op.drop_table("lsq_rate_slots")
    op.drop_table("lsq_rate_buckets")
    op.drop_table("lsq_locks")
