"""The tables: synced tasks, the edit queue, run records and per-run lead lists."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)

from lsq_sync.store.types import UTCDateTime, json_type, long_text, utc_timestamp

# Explicit names so that migrations and `alembic check` agree on every dialect.
metadata = MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

ID_LEN = 64  # LeadSquared ids are GUIDs (36); room for other id shapes


def max_length(column: Column[Any]) -> int:
    """The longest text `column` takes: what every length check reads (one source)."""
    length = getattr(column.type, "length", None)
    assert isinstance(length, int), f"{column} has no length"
    return length

tasks = Table(
    "lsq_tasks", metadata,
    Column("task_id", String(ID_LEN), primary_key=True),
    Column("lead_id", String(ID_LEN), nullable=False),
    Column("name", String(500)),
    Column("description", long_text()),
    Column("due_date", UTCDateTime()),
    Column("created_on", UTCDateTime()),
    Column("owner_id", String(ID_LEN)),
    Column("owner_name", String(255)),
    Column("created_by", String(ID_LEN)),
    Column("created_by_name", String(255)),
    Column("status", String(64)),
    Column("reminder_minutes", Integer),
    Column("first_seen_at", UTCDateTime(), nullable=False),
    Column("last_synced_at", UTCDateTime(), nullable=False),
    Column("deleted_at", UTCDateTime()),
    Column("raw", json_type()),
    # What a pull compares to notice a change: reading `raw` back would cost more than
    # writing it (see store.raw_hash).
    Column("raw_hash", String(64)),
    # When the task's content last changed here (a pull that found it changed, created or
    # deleted, or a push): what downstream loads select "changed since" on.
    Column("changed_at", UTCDateTime()),
    Index(None, "lead_id"),
    Index(None, "changed_at"),
    Index(None, "owner_id", "status"),
    Index(None, "status"),
    Index(None, "due_date"),
    Index(None, "deleted_at", "due_date"),  # open and overdue tasks
)

# Every version of every task (SCD type 2), when [store] history = true: the columns of
# lsq_tasks, valid from `valid_from` until `valid_to` (NULL: the current version); a
# deletion is a version of its own with `deleted` true.
task_history = Table(
    "lsq_task_history", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    *(Column(c.name, c.type, nullable=c.nullable and not c.primary_key) for c in tasks.columns),
    Column("valid_from", UTCDateTime(), nullable=False),
    Column("valid_to", UTCDateTime()),
    Column("deleted", Boolean, nullable=False),
    Index(None, "task_id", "valid_to"),
    Index(None, "valid_from"),
)

EDIT = {"edit": True}

task_edits = Table(
    "lsq_task_edits", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("task_id", String(ID_LEN), nullable=False),
    # The fields an edit carries (info edit: leadsquared/fields.py has a row for each).
    Column("name", String(500), info=EDIT),
    Column("description", long_text(), info=EDIT),
    # Text, not a timestamp: other systems insert here, and a malformed value must be
    # stored so that it can be reported, not refused by the database.
    Column("due_date", String(32), info=EDIT),
    Column("reminder_minutes", Integer, info=EDIT),
    Column("notify_by", String(8), info=EDIT),
    Column("owner_id", String(ID_LEN), info=EDIT),
    Column("owner_email", String(255), info=EDIT),
    Column("status", String(16), server_default=text("'pending'")),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("last_error", Text),
    Column("created_at", UTCDateTime(), server_default=utc_timestamp()),
    Column("sent_at", UTCDateTime()),
    # The synced state of the task the edit was made against (a snapshot of the fields an
    # edit can change, see edits.snapshot): the base of the three-way merge at push time.
    Column("base", json_type()),
    Column("run_id", Integer),  # the run that last tried the edit
    Index(None, "status", "task_id"),
)

sync_runs = Table(
    "lsq_sync_runs", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("command", String(16), nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime()),
    Column("status", String(16), nullable=False),
    Column("leads_total", Integer, nullable=False, server_default=text("0")),
    Column("leads_ok", Integer, nullable=False, server_default=text("0")),
    Column("leads_failed", Integer, nullable=False, server_default=text("0")),
    Column("leads_skipped", Integer, nullable=False, server_default=text("0")),
    Column("tasks_upserted", Integer, nullable=False, server_default=text("0")),
    Column("tasks_deleted", Integer, nullable=False, server_default=text("0")),
    Column("tasks_skipped", Integer, nullable=False, server_default=text("0")),
    Column("edits_sent", Integer, nullable=False, server_default=text("0")),
    Column("edits_failed", Integer, nullable=False, server_default=text("0")),
    Column("edits_conflict", Integer, nullable=False, server_default=text("0")),
    Column("api_calls", Integer, nullable=False, server_default=text("0")),
    Column("throttled", Integer, nullable=False, server_default=text("0")),
    Column("error", Text),
    Column("pid", Integer),
    Column("host", String(255)),
    Column("heartbeat_at", UTCDateTime()),
    # The pass over [leads].query this run works on (NULL for --lead-id and --limit runs):
    # when its first run started, the :last_success its query is evaluated with, and
    # whether this run completed it. :last_success is the start of the last complete pass.
    Column("pass_started_at", UTCDateTime()),
    Column("pass_since", UTCDateTime()),
    Column("pass_complete", Boolean, nullable=False, server_default=false()),
    Index(None, "command", "status"),
)

# Leads whose last fetch failed: tried again at the start of the next passes, whether or
# not the query still returns them, until they succeed or fail MAX_LEAD_RETRIES times.
failed_leads = Table(
    "lsq_failed_leads", metadata,
    Column("lead_id", String(ID_LEN), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("first_failed_at", UTCDateTime(), nullable=False),
    Column("last_failed_at", UTCDateTime(), nullable=False),
    Column("last_run_id", Integer),
    Column("last_error", Text),
)

# The lead ids a pull works through, staged from [leads].query: deduplicated by the
# unique key, never held in memory, and marked per lead so that a killed run resumes.
run_leads = Table(
    "lsq_run_leads", metadata,
    Column("run_id", Integer, ForeignKey("lsq_sync_runs.id", ondelete="CASCADE"),
           primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("lead_id", String(ID_LEN), nullable=False),
    # todo | ok | failed | partial (done, but some of its tasks were skipped as bad)
    Column("state", String(8), nullable=False, server_default=text("'todo'")),
    Column("error", Text),
    UniqueConstraint("run_id", "lead_id"),
)

# One row per task whose edits a push is sending: the primary key makes the claim
# exclusive on every dialect, and `claimed_until` lets a dead process's claim lapse.
edit_claims = Table(
    "lsq_edit_claims", metadata,
    Column("task_id", String(ID_LEN), primary_key=True),
    Column("run_id", Integer, nullable=False),
    Column("claimed_until", UTCDateTime(), nullable=False),
)

# One row per kind of run under way (pull, push): a lease renewed by the holder's
# heartbeat, so that a killed holder never blocks the next run for long.
locks = Table(
    "lsq_locks", metadata,
    Column("name", String(16), primary_key=True),
    Column("run_id", Integer, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("host", String(255), nullable=False),
    Column("acquired_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
)

# The send slots every process using one API key has taken, so that together they stay
# within the account's limit. `sent_at` is wall-clock epoch seconds (shared by processes).
rate_buckets = Table(
    "lsq_rate_buckets", metadata,
    Column("bucket", String(64), primary_key=True),
    Column("touched", Double, nullable=False),
    # Until when (epoch seconds) an urgent taker (listen) waits for a slot: the others
    # leave the slots freed until then to it.
    Column("urgent_until", Double),
)
rate_slots = Table(
    "lsq_rate_slots", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("bucket", String(64), nullable=False),
    Column("sent_at", Double, nullable=False),
    Index(None, "bucket", "sent_at"),
)

# Webhooks received by `listen` (and anything else that INSERTs here): each names a lead
# whose tasks likely changed. Pending while consumed_at is NULL; consumed by the first
# fetch of its lead that was sent after received_at, in the transaction that writes it.
# lead_id is NULL for a task the hint named alone that no row of lsq_tasks knows yet.
lead_hints = Table(
    "lsq_lead_hints", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("lead_id", String(ID_LEN)),
    Column("task_id", String(ID_LEN)),
    Column("event", String(32)),
    Column("received_at", UTCDateTime(), nullable=False),
    Column("consumed_at", UTCDateTime()),
    Column("run_id", Integer),
    Index(None, "consumed_at", "received_at"),
    Index(None, "lead_id", "consumed_at"),
)

# One row per lead ever fetched: when the fetch whose result lsq_tasks holds was sent (a
# fetch sent earlier never overwrites it), and its record of changes (the freshness
# estimator's input): fetches, those that found a change, the seconds between fetches
# that found none (quiet_s) and the recent gaps that ended in a change (change_gaps, JSON).
lead_state = Table(
    "lsq_lead_state", metadata,
    Column("lead_id", String(ID_LEN), primary_key=True),
    Column("fetched_at", UTCDateTime()),
    Column("fetches", Integer, nullable=False, server_default=text("0")),
    Column("changes", Integer, nullable=False, server_default=text("0")),
    Column("changed_at", UTCDateTime()),
    Column("quiet_s", Double, nullable=False, server_default=text("0")),
    Column("change_gaps", Text),
    Column("tasks", Integer, nullable=False, server_default=text("0")),
    Index(None, "fetched_at"),
)

# Webhooks by how `listen` answered them (accepted, unauthorized, too_large, no_lead,
# unavailable, ...), added to by each listener every few seconds.
webhook_outcomes = Table(
    "lsq_webhook_outcomes", metadata,
    Column("outcome", String(32), primary_key=True),
    Column("count", Integer, nullable=False),
    Column("last_at", UTCDateTime(), nullable=False),
)

# What each `verify` run estimated: the share of stale tasks (a ratio estimator over a
# cluster sample of leads, with its 95% interval) and of stale leads (Wilson), and the kinds.
verify_results = Table(
    "lsq_verify_results", metadata,
    Column("run_id", Integer, primary_key=True, autoincrement=False),
    Column("finished_at", UTCDateTime(), nullable=False),
    Column("population", Integer, nullable=False),
    Column("sampled", Integer, nullable=False),
    Column("failed", Integer, nullable=False),
    Column("tasks", Integer, nullable=False),
    Column("stale_tasks", Integer, nullable=False),
    Column("stale_share", Double, nullable=False),
    Column("stale_low", Double, nullable=False),
    Column("stale_high", Double, nullable=False),
    Column("stale_leads", Integer, nullable=False),
    Column("lead_share", Double, nullable=False),
    Column("lead_low", Double, nullable=False),
    Column("lead_high", Double, nullable=False),
    Column("missing", Integer, nullable=False),
    Column("deleted", Integer, nullable=False),
    Column("differing", Integer, nullable=False),
    Column("fields", Text),  # JSON: how many stale tasks differed in each field
)
