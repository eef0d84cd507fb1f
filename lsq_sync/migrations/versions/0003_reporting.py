"""Reporting: views for open, overdue and per-owner tasks, and an index for open tasks.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

from lsq_sync.store import ddl

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Status is opaque text from LeadSquared; these are the values that mean "done".
CLOSED = "('completed', 'cancelled', 'canceled')"
OPEN = f"deleted_at IS NULL AND LOWER(COALESCE(status, '')) NOT IN {CLOSED}"
COLUMNS = ("task_id, lead_id, name, description, due_date, created_on, owner_id, owner_name, "
           "created_by, created_by_name, status, reminder_minutes, first_seen_at, "
           "last_synced_at")


def _now() -> str:
    """The current UTC time, comparable with how each dialect stores due_date."""
    name = op.get_bind().dialect.name
    if name == "postgresql":
        return "now()"
    if name in ("mysql", "mariadb"):
        return "UTC_TIMESTAMP(6)"
    # SQLAlchemy stores SQLite datetimes as 'YYYY-MM-DD HH:MM:SS.ffffff' text.
    return "strftime('%Y-%m-%d %H:%M:%f000', 'now')"


def upgrade() -> None:
    ddl.create_index("ix_lsq_tasks_deleted_at_due_date", "lsq_tasks", ["deleted_at", "due_date"])
    ddl.create_view("lsq_open_tasks", f"SELECT {COLUMNS} FROM lsq_tasks WHERE {OPEN}")
    ddl.create_view("lsq_overdue_tasks",
                    f"SELECT {COLUMNS} FROM lsq_tasks "
                    f"WHERE {OPEN} AND due_date IS NOT NULL AND due_date < {_now()}")
    ddl.create_view("lsq_task_counts_by_owner",
                    "SELECT owner_id, owner_name, status, COUNT(*) AS tasks FROM lsq_tasks "
                    "WHERE deleted_at IS NULL GROUP BY owner_id, owner_name, status")


def downgrade() -> None:
    for view in ("lsq_task_counts_by_owner", "lsq_overdue_tasks", "lsq_open_tasks"):
        op.execute(f"DROP VIEW {view}")
    op.drop_index("ix_lsq_tasks_deleted_at_due_date", table_name="lsq_tasks")
