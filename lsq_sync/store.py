"""Write one batch of fetched leads into lsq_tasks: upserts, deletion marks, done marks."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection

from lsq_sync.models import run_leads, tasks
from lsq_sync.types import json_dumps
from lsq_sync.upsert import upsert

CHUNK = 500  # ids per IN list: well inside every dialect's parameter limit
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

    @property
    def ok(self) -> bool:
        return self.rows is not None


@dataclass
class BatchResult:
    upserted: int = 0
    deleted: int = 0


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def write_batch(conn: Connection, outcomes: Iterable[LeadOutcome], *, run_id: int,
                now: datetime) -> BatchResult:
    """Apply the outcomes of several leads in the caller's transaction.

    For each lead that was fetched: its tasks are upserted (only those that changed), its
    known tasks missing from the answer get `deleted_at`, tasks that came back lose it, and
    a task listed under a new lead moves there. Leads that failed change nothing but their
    mark in lsq_run_leads.
    """
    outcomes = list(outcomes)
    good = [o for o in outcomes if o.ok]
    result = BatchResult()
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
        changed.append({**task, "first_seen_at": now, "last_synced_at": now, "deleted_at": None})
    upsert(conn, tasks, changed, keep=["first_seen_at"])
    result.upserted = len(changed)

    gone = [tid for tid, old in existing.items() if old.deleted_at is None and tid not in fresh]
    for part in chunks(gone):
        conn.execute(update(tasks).where(tasks.c.task_id.in_(part), tasks.c.deleted_at.is_(None))
                     .values(deleted_at=now))
    result.deleted = len(gone)

    # Upserted rows already carry `now`; only the unchanged ones need it.
    for part in chunks(unchanged):
        conn.execute(update(tasks).where(tasks.c.task_id.in_(part)).values(last_synced_at=now))

    mark_leads(conn, run_id, [o.seq for o in outcomes if o.ok], "ok")
    for o in outcomes:
        if not o.ok:
            conn.execute(update(run_leads).where(run_leads.c.run_id == run_id,
                                                 run_leads.c.seq == o.seq)
                         .values(state="failed", error=(o.error or "")[:1000]))
    return result


def mark_leads(conn: Connection, run_id: int, seqs: Sequence[int], state: str) -> None:
    for part in chunks(seqs):
        conn.execute(update(run_leads)
                     .where(run_leads.c.run_id == bindparam("r"), run_leads.c.seq.in_(part))
                     .values(state=state), {"r": run_id})
