"""Exact incremental pulls, rows that always fit, history: passes over the leads query
(the :last_success watermark), leads that failed kept for retry, changed_at on tasks,
descriptions of any length on MySQL/MariaDB, and lsq_task_history.

Existing succeeded pulls count as complete passes that started when they started, so the
watermark stays where it was. changed_at starts as last_synced_at.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from lsq_sync.store import ddl
from lsq_sync.store.types import UTCDateTime, json_type, long_text

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _now(shift: str = "") -> str:
    """The current UTC time (moved by `shift`, e.g. '-7 days'), comparable with how each
    dialect stores timestamps (see 0003)."""
    name = op.get_bind().dialect.name
    amount = shift.split()
    if name == "postgresql":
        return f"(now() - interval '{shift[1:]}')" if shift else "now()"
    if name in ("mysql", "mariadb"):
        unit = amount[1].rstrip("s").upper() if shift else ""
        return f"(UTC_TIMESTAMP(6) - INTERVAL {amount[0][1:]} {unit})" if shift \
            else "UTC_TIMESTAMP(6)"
    extra = f", '{shift}'" if shift else ""
    return f"strftime('%Y-%m-%d %H:%M:%f000', 'now'{extra})"


def upgrade() -> None:
    ddl.add_column("lsq_sync_runs", sa.Column("pass_started_at", UTCDateTime()))
    ddl.add_column("lsq_sync_runs", sa.Column("pass_since", UTCDateTime()))
    ddl.add_column("lsq_sync_runs", sa.Column("pass_complete", sa.Boolean(), nullable=False,
                                              server_default=sa.false()))
    runs = sa.table("lsq_sync_runs", sa.column("started_at"), sa.column("command"),
                    sa.column("status"), sa.column("pass_started_at"),
                    sa.column("pass_complete", sa.Boolean()))
    op.execute(runs.update().where(runs.c.command.in_(["pull", "sync"]),
                                   runs.c.status == "succeeded")
               .values(pass_started_at=runs.c.started_at, pass_complete=True))
    # An unfinished pull resumes as a pass whose query is evaluated with NULL (all leads):
    # what it was evaluated with before is not known, and more is never less.
    op.execute(runs.update().where(runs.c.command.in_(["pull", "sync"]),
                                   runs.c.status != "succeeded")
               .values(pass_started_at=runs.c.started_at))

    ddl.create_table(
        "lsq_failed_leads",
        sa.Column("lead_id", sa.String(64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("first_failed_at", UTCDateTime(), nullable=False),
        sa.Column("last_failed_at", UTCDateTime(), nullable=False),
        sa.Column("last_run_id", sa.Integer()),
        sa.Column("last_error", sa.Text()),
        sa.PrimaryKeyConstraint("lead_id", name="pk_lsq_failed_leads"),
    )

    ddl.add_column("lsq_sync_runs", sa.Column("tasks_skipped", sa.Integer(), nullable=False,
                                              server_default=sa.text("0")))
    ddl.add_column("lsq_tasks", sa.Column("changed_at", UTCDateTime()))
    tasks = sa.table("lsq_tasks", sa.column("changed_at"), sa.column("last_synced_at"))
    op.execute(tasks.update().values(changed_at=tasks.c.last_synced_at))
    ddl.create_index("ix_lsq_tasks_changed_at", "lsq_tasks", ["changed_at"])

    ddl.create_table(
        "lsq_task_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("lead_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(500)),
        sa.Column("description", long_text()),
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
        sa.Column("raw_hash", sa.String(64)),
        sa.Column("changed_at", UTCDateTime()),
        sa.Column("valid_from", UTCDateTime(), nullable=False),
        sa.Column("valid_to", UTCDateTime()),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_lsq_task_history"),
    )
    ddl.create_index("ix_lsq_task_history_task_id_valid_to", "lsq_task_history",
                    ["task_id", "valid_to"])
    ddl.create_index("ix_lsq_task_history_valid_from", "lsq_task_history", ["valid_from"])

    # Reports on history: a clock for "since a week ago" in any database, and owner changes.
    ddl.create_view("lsq_clock", f"SELECT {_now()} AS now_utc, "
                                 f"{_now('-1 day')} AS day_ago, {_now('-7 days')} AS week_ago")
    ddl.create_view(
        "lsq_task_reassignments",
        "SELECT h.task_id, h.lead_id, h.name, p.owner_id AS from_owner_id, "
        "p.owner_name AS from_owner_name, h.owner_id AS to_owner_id, "
        "h.owner_name AS to_owner_name, h.valid_from AS reassigned_at "
        "FROM lsq_task_history h JOIN lsq_task_history p "
        "ON p.task_id = h.task_id AND p.valid_to = h.valid_from "
        "WHERE COALESCE(p.owner_id, '') <> COALESCE(h.owner_id, '') "
        "AND h.deleted = p.deleted")

    if op.get_bind().dialect.name in ("mysql", "mariadb"):  # TEXT stops at 64 KB there
        for table in ("lsq_tasks", "lsq_task_edits"):
            op.alter_column(table, "description", type_=mysql.MEDIUMTEXT(),
                            existing_type=sa.Text(), existing_nullable=True)


def downgrade() -> None:
    if op.get_bind().dialect.name in ("mysql", "mariadb"):
        for table in ("lsq_tasks", "lsq_task_edits"):
            op.alter_column(table, "description", type_=sa.Text(),
                            existing_type=mysql.MEDIUMTEXT(), existing_nullable=True)
    op.execute("DROP VIEW lsq_task_reassignments")
    op.execute("DROP VIEW lsq_clock")
    op.drop_table("lsq_task_history")
    op.drop_index("ix_lsq_tasks_changed_at", table_name="lsq_tasks")
    with op.batch_alter_table("lsq_tasks") as batch:
        batch.drop_column("changed_at")
    op.drop_table("lsq_failed_leads")
    with op.batch_alter_table("lsq_sync_runs") as batch:
        batch.drop_column("tasks_skipped")
        batch.drop_column("pass_complete")
        batch.drop_column("pass_since")
        batch.drop_column("pass_started_at")
