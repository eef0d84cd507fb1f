"""Webhook hints and each lead's fetch record: lsq_lead_hints (a hint per webhook, pending
until a fetch of its lead that started after it is written), lsq_lead_state (when the
fetch whose result lsq_tasks holds was sent, and how often fetches found a change), and
lsq_webhook_outcomes (webhooks counted by how `listen` answered them), and
lsq_rate_buckets.urgent_until (the shared budget's slots left to listen while it waits);
and lsq_verify_results (what each `verify` estimated).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from lsq_sync.store import ddl
from lsq_sync.store.types import UTCDateTime

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    ddl.add_column("lsq_rate_buckets", sa.Column("urgent_until", sa.Double()))
    ddl.create_table(
        "lsq_lead_hints",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("lead_id", sa.String(64)),
        sa.Column("task_id", sa.String(64)),
        sa.Column("event", sa.String(32)),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("consumed_at", UTCDateTime()),
        sa.Column("run_id", sa.Integer()),
        sa.PrimaryKeyConstraint("id", name="pk_lsq_lead_hints"),
    )
    ddl.create_index("ix_lsq_lead_hints_consumed_at_received_at", "lsq_lead_hints",
                     ["consumed_at", "received_at"])
    ddl.create_index("ix_lsq_lead_hints_lead_id_consumed_at", "lsq_lead_hints",
                     ["lead_id", "consumed_at"])
    ddl.create_table(
        "lsq_lead_state",
        sa.Column("lead_id", sa.String(64), nullable=False),
        sa.Column("fetched_at", UTCDateTime()),
        sa.Column("fetches", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("changes", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("changed_at", UTCDateTime()),
        sa.Column("quiet_s", sa.Double(), nullable=False, server_default=sa.text("0")),
        sa.Column("change_gaps", sa.Text()),
        sa.Column("tasks", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.PrimaryKeyConstraint("lead_id", name="pk_lsq_lead_state"),
    )
    ddl.create_index("ix_lsq_lead_state_fetched_at", "lsq_lead_state", ["fetched_at"])
    ddl.create_table(
        "lsq_webhook_outcomes",
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("last_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("outcome", name="pk_lsq_webhook_outcomes"),
    )


    cols: list[sa.Column[Any]] = [sa.Column(name, sa.Integer(), nullable=False) for name in (
        "population", "sampled", "failed", "tasks", "stale_tasks")]
    shares: list[sa.Column[Any]] = [sa.Column(name, sa.Double(), nullable=False) for name in (
        "stale_share", "stale_low", "stale_high")]
    leads: list[sa.Column[Any]] = [sa.Column("stale_leads", sa.Integer(), nullable=False)] + [
        sa.Column(name, sa.Double(), nullable=False) for name in (
            "lead_share", "lead_low", "lead_high")]
    kinds: list[sa.Column[Any]] = [sa.Column(name, sa.Integer(), nullable=False) for name in (
        "missing", "deleted", "differing")]
    ddl.create_table(
        "lsq_verify_results",
        sa.Column("run_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=False),
        *cols, *shares, *leads, *kinds,
        sa.Column("fields", sa.Text()),
        sa.PrimaryKeyConstraint("run_id", name="pk_lsq_verify_results"),
    )


def downgrade() -> None:
    op.drop_table("lsq_verify_results")
    op.drop_table("lsq_webhook_outcomes")
    op.drop_table("lsq_lead_state")
    op.drop_table("lsq_lead_hints")
    with op.batch_alter_table("lsq_rate_buckets") as batch:
        batch.drop_column("urgent_until")
