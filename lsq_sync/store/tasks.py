"""Write one batch of fetched leads into lsq_tasks: upserts, deletion marks, done marks."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, literal, select, update
from sqlalchemy.engine import Connection

from lsq_sync.states import LeadState
from lsq_sync.store import hints, leadstate, worklist
from lsq_sync.store.db import chunks
from lsq_sync.store.models import failed_leads, task_history, tasks
from lsq_sync.store.types import UTCDateTime, json_dumps
from lsq_sync.store.upsert import upsert

# Bump when tasks.parse_task derives columns differently: every stored row then looks
# changed to the next pull, which rewrites it.
ROW_FORMAT = 1


def raw_hash(raw: Any) -> str:
    """A digest of a task as received and of how its columns are derived from it."""
    canonical = json_dumps(raw, sort_keys=True)
    return hashlib.blake2b(f"{ROW_FORMAT}:{canonical}".encode(), digest_size=16).hexdigest()


@dataclass
class LeadOutcome:
    """One lead's fetch: its tasks, or the reason it failed."""

    seq: int
    lead_id: str
    rows: list[dict[str, Any]] | None = None
    error: str | None = None
    skipped: dict[str, str] = field(default_factory=dict)  # bad tasks: id -> why
    sent_at: datetime | None = None  # when the fetch was sent (None: at the write)

    @property
    def ok(self) -> bool:
        return self.rows is not None


@dataclass
class BatchResult:
    upserted: int = 0
    deleted: int = 0
    skipped: int = 0
    overtaken: int = 0  # leads whose fetch was older than the one stored: not written


def write_batch(conn: Connection, outcomes: Iterable[LeadOutcome], *, run_id: int,
                now: datetime, history: bool = False) -> BatchResult:
    """Apply the outcomes of several leads in the caller's transaction.

    For each lead that was fetched: its tasks are upserted (only those that changed, with
    `changed_at`), its known tasks missing from the answer get `deleted_at`, tasks that
    came back lose it, and a task listed under a new lead moves there. A task skipped as
    bad keeps its last good row, and is never marked deleted. Leads that failed change
    nothing but their mark in lsq_run_leads and their count in lsq_failed_leads. With
    `history`, every new version (changed, moved, deleted, back) goes to lsq_task_history.

    Two fetches of one lead (a pass, a hint, a push's read) may overlap: the one sent
    later wins, whatever order they finish in (lsq_lead_state holds the send time of the
    fetch written last; an older one is counted as overtaken and changes nothing). Each
    fetch consumes the lead's hints received before it was sent.
    """
    outcomes = list(outcomes)
    fetched = [o for o in outcomes if o.ok]
    result = BatchResult()
    sent: dict[str, datetime] = {}
    for o in fetched:
        at = o.sent_at or now
        sent[o.lead_id] = max(at, sent.get(o.lead_id, at))
    won = leadstate.claim(conn, sent)
    good = [o for o in fetched if o.lead_id in won and (o.sent_at or now) == sent[o.lead_id]]
    result.overtaken = len(fetched) - len(good)
    lead_ids = [o.lead_id for o in good]

    existing: dict[str, Any] = {}
    for part in chunks(lead_ids):
        rows = conn.execute(
            select(tasks.c.task_id, tasks.c.lead_id, tasks.c.deleted_at, tasks.c.raw_hash)
            .where(tasks.c.lead_id.in_(part))
        )
        for found in rows:
            existing[found.task_id] = found

    fresh: dict[str, dict[str, Any]] = {}
    for outcome in good:
        for task in outcome.rows or ():
            # A task listed twice: the later lead wins.
            fresh[task["task_id"]] = {**task, "raw_hash": raw_hash(task["raw"])}

    changed: list[dict[str, Any]] = []
    unchanged: list[str] = []
    for task_id, task in fresh.items():
        old = existing.get(task_id)
        if old is not None and old.lead_id == task["lead_id"] and old.deleted_at is None \
                and old.raw_hash == task["raw_hash"]:
            unchanged.append(task_id)
            continue
        changed.append({**task, "first_seen_at": now, "last_synced_at": now, "deleted_at": None,
                        "changed_at": now})
    upsert(conn, tasks, changed, keep=["first_seen_at"])
    result.upserted = len(changed)

    skipped = {tid for o in good for tid in o.skipped}
    result.skipped = sum(len(o.skipped) for o in good)
    gone = [tid for tid, old in existing.items()
            if old.deleted_at is None and tid not in fresh and tid not in skipped]
    for part in chunks(gone):
        conn.execute(update(tasks).where(tasks.c.task_id.in_(part), tasks.c.deleted_at.is_(None))
                     .values(deleted_at=now, changed_at=now))
    result.deleted = len(gone)
    if history:
        record_history(conn, [row["task_id"] for row in changed] + gone, now)

    # Upserted rows already carry `now`; only the unchanged ones need it.
    for part in chunks(unchanged):
        conn.execute(update(tasks).where(tasks.c.task_id.in_(part)).values(last_synced_at=now))

    touched = {t["lead_id"] for t in changed} | {existing[tid].lead_id for tid in gone}
    leadstate.record(conn, won, sent, touched,
                     {o.lead_id: len(o.rows or ()) + len(o.skipped) for o in good})
    hints.consume(conn, sent, run_id, now)

    problems = {o.seq: (LeadState.FAILED, o.error or "") if not o.ok else (
                LeadState.PARTIAL, "skipped bad tasks: "
                + "; ".join(f"{tid}: {reason}" for tid, reason in o.skipped.items()))
                for o in outcomes if not o.ok or o.skipped}
    worklist.mark(conn, run_id, ok=[o.seq for o in fetched if not o.skipped],
                  problems=problems)
    _count_failures(conn, outcomes, run_id, now)
    return result


def _count_failures(conn: Connection, outcomes: list[LeadOutcome], run_id: int,
                    now: datetime) -> None:
    """A lead fetched well leaves lsq_failed_leads; a failed one counts one more failure."""
    for part in chunks([o.lead_id for o in outcomes if o.ok]):
        conn.execute(delete(failed_leads).where(failed_leads.c.lead_id.in_(part)))
    bad = {o.lead_id: (o.error or "")[:1000] for o in outcomes if not o.ok}
    if not bad:
        return
    known: set[str] = set()
    for part in chunks(list(bad)):
        known.update(conn.execute(select(failed_leads.c.lead_id)
                                  .where(failed_leads.c.lead_id.in_(part))).scalars())
    for lead_id, error in bad.items():
        if lead_id in known:
            conn.execute(update(failed_leads).where(failed_leads.c.lead_id == lead_id).values(
                failures=failed_leads.c.failures + 1, last_failed_at=now, last_run_id=run_id,
                last_error=error))
        else:
            conn.execute(insert(failed_leads).values(
                lead_id=lead_id, failures=1, first_failed_at=now, last_failed_at=now,
                last_run_id=run_id, last_error=error))


def record_history(conn: Connection, task_ids: Sequence[str], now: datetime) -> None:
    """Close the current version of each task and add the one lsq_tasks holds now (a
    deletion is a version of its own), in the caller's transaction."""
    names = [c.name for c in tasks.columns]
    for part in chunks(task_ids):
        conn.execute(update(task_history).where(task_history.c.task_id.in_(part),
                                                task_history.c.valid_to.is_(None))
                     .values(valid_to=now))
        conn.execute(insert(task_history).from_select(
            [*names, "valid_from", "deleted"],
            select(*tasks.columns, literal(now, UTCDateTime()),
                   tasks.c.deleted_at.is_not(None)).where(tasks.c.task_id.in_(part))))


def overlay(conn: Connection, task_id: str, values: Mapping[str, Any]) -> None:
    """Lay the values a push just sent over the task's row (see core.push._apply)."""
    conn.execute(update(tasks).where(tasks.c.task_id == task_id).values(**values))


def local_tasks(conn: Connection, lead_ids: Sequence[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """The rows of lsq_tasks of each lead (deleted ones too), by lead and task id."""
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for part in chunks(sorted(set(lead_ids))):
        for row in conn.execute(select(tasks).where(tasks.c.lead_id.in_(part))).mappings():
            found.setdefault(row["lead_id"], {})[row["task_id"]] = dict(row)
    return found
