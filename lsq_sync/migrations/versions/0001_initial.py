"""The initial schema: tasks, the edit queue, runs and per-run lead lists.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from lsq_sync.store import ddl
from lsq_sync.store.types import UTCDateTime, json_type, utc_timestamp

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    ddl.create_table(
        "lsq_tasks",
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("lead_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(500)),
        sa.Column("description", sa.Text()),
        sa.Column("due_date", UTCDateTime()),
        sa.Column("created_on", UTCDateTime()),
        sa.Column("owner_id", sa.String(64)),
        sa.Column("owner_name", sa.String(255)),
        sa.Column("created_by", sa.String(64)),
        sa.Column("created_by_name", sa.String(255)),
        sa.Column("status", sa.String(64)),
        sa.Column("reminder_minutes", sa.Integer()),
        sa.Column("first_seen_at", UTCDateTime(), nullable=False),
        sa.Column("last_synced_at", UTCDateTime(), nullable=False),
        sa.Column("deleted_at", UTCDateTime()),
        sa.Column("raw", json_type()),
        sa.PrimaryKeyConstraint("task_id", name="pk_lsq_tasks"),
    )
    ddl.create_index("ix_lsq_tasks_lead_id", "lsq_tasks", ["lead_id"])
    ddl.create_index("ix_lsq_tasks_owner_id_status", "lsq_tasks", ["owner_id", "status"])
    ddl.create_index("ix_lsq_tasks_status", "lsq_tasks", ["status"])
    ddl.create_index("ix_lsq_tasks_due_date", "lsq_tasks", ["due_date"])

    ddl.create_table(
        "lsq_task_edits",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(500)),
        sa.Column("description", sa.Text()),
        sa.Column("due_date", sa.String(32)),
        sa.Column("reminder_minutes", sa.Integer()),
        sa.Column("notify_by", sa.String(8)),
        sa.Column("owner_id", sa.String(64)),
        sa.Column("owner_email", sa.String(255)),
        sa.Column("status", sa.String(16), server_default=sa.text("'pending'")),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("last_error", sa.Text()),
        sa.Column("created_at", UTCDateTime(), server_default=utc_timestamp()),
        sa.Column("sent_at", UTCDateTime()),
        sa.PrimaryKeyConstraint("id", name="pk_lsq_task_edits"),
    )
    ddl.create_index("ix_lsq_task_edits_status_task_id", "lsq_task_edits", ["status", "task_id"])

    counts = ("leads_total", "leads_ok", "leads_failed", "leads_skipped", "tasks_upserted",
              "tasks_deleted", "edits_sent", "edits_failed", "api_calls", "throttled")
    ddl.create_table(
        "lsq_sync_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("command", sa.String(16), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime()),
        sa.Column("status", sa.String(16), nullable=False),
        *(sa.Column(name, sa.Integer(), nullable=False, server_default=sa.text("0"))
          for name in counts),
        sa.Column("error", sa.Text()),
        sa.Column("pid", sa.Integer()),
        sa.Column("host", sa.String(255)),
        sa.Column("heartbeat_at", UTCDateTime()),
        sa.PrimaryKeyConstraint("id", name="pk_lsq_sync_runs"),
    )
    ddl.create_index("ix_lsq_sync_runs_command_status", "lsq_sync_runs", ["command", "status"])

    ddl.create_table(
        "lsq_run_leads",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("lead_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(8), nullable=False, server_default=sa.text("'todo'")),
        sa.ForeignKeyConstraint(["run_id"], ["lsq_sync_runs.id"],
                                name="fk_lsq_run_leads_run_id_lsq_sync_runs",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "seq", name="pk_lsq_run_leads"),
        sa.UniqueConstraint("run_id", "lead_id", name="uq_lsq_run_leads_run_id_lead_id"),
    )


def downgrade() -> None:
    op.drop_table("lsq_run_leads")
    op.drop_index("ix_lsq_sync_runs_command_status", table_name="lsq_sync_runs")
    op.drop_table("lsq_sync_runs")
    op.drop_index("ix_lsq_task_edits_status_task_id", table_name="lsq_task_edits")
    op.drop_table("lsq_task_edits")
    for name in ("due_date", "status", "owner_id_status", "lead_id"):
        op.drop_index(f"ix_lsq_tasks_{name}", table_name="lsq_tasks")
    op.drop_table("lsq_tasks")
