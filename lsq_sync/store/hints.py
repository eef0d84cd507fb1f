"""lsq_lead_hints and lsq_webhook_outcomes: hints recorded, resolved, listed, consumed;
webhooks counted by outcome."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from lsq_sync.store.db import chunks
from lsq_sync.store.models import lead_hints, tasks, webhook_outcomes
from lsq_sync.store.types import utcnow

KEEP_CONSUMED = timedelta(days=7)  # consumed hints are kept this long, for reports


@dataclass(frozen=True)
class Hint:
    """What one webhook names: a lead, or a task alone (resolved through lsq_tasks)."""

    lead_id: str | None
    task_id: str | None = None
    event: str | None = None


def add(conn: Connection, hints: Sequence[Hint], now: datetime) -> int:
    """Record `hints` received at `now` in the caller's transaction; a hint naming only a
    task gets the task's lead from lsq_tasks when that knows it. Returns how many."""
    return add_many(conn, [(hints, now)])


def add_many(conn: Connection, received: Sequence[tuple[Sequence[Hint], datetime]]) -> int:
    """add() for several webhooks, each with its own time, in one statement."""
    orphans = sorted({h.task_id for found, _ in received for h in found
                      if h.lead_id is None and h.task_id})
    leads = _leads_of(conn, orphans) if orphans else {}
    rows = [{"lead_id": h.lead_id or leads.get(h.task_id or ""), "task_id": h.task_id,
             "event": h.event, "received_at": at} for found, at in received for h in found]
    if rows:
        conn.execute(insert(lead_hints), rows)
    return len(rows)


def _leads_of(conn: Connection, task_ids: Sequence[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for part in chunks(task_ids):
        found.update({row.task_id: row.lead_id for row in conn.execute(
            select(tasks.c.task_id, tasks.c.lead_id).where(tasks.c.task_id.in_(part)))})
    return found


def resolve(engine: Engine) -> int:
    """Give pending hints that name only a task the task's lead, where lsq_tasks knows it
    now (a pass has fetched it since). Returns how many were resolved."""
    with engine.begin() as conn:
        orphans = list(conn.execute(
            select(lead_hints.c.id, lead_hints.c.task_id).where(
                lead_hints.c.lead_id.is_(None), lead_hints.c.consumed_at.is_(None),
                lead_hints.c.task_id.is_not(None))))
        if not orphans:
            return 0
        leads = _leads_of(conn, sorted({o.task_id for o in orphans}))
        params = [{"b_id": o.id, "b_lead": leads[o.task_id]} for o in orphans
                  if o.task_id in leads]
        if params:
            conn.execute(update(lead_hints).where(lead_hints.c.id == bindparam("b_id"))
                         .values(lead_id=bindparam("b_lead")), params)
        return len(params)


def pending_leads(engine: Engine, limit: int | None = None) -> list[str]:
    """The leads with pending hints, the one whose oldest hint is oldest first."""
    oldest = func.min(lead_hints.c.received_at)
    query = (select(lead_hints.c.lead_id).where(lead_hints.c.consumed_at.is_(None),
                                                 lead_hints.c.lead_id.is_not(None))
             .group_by(lead_hints.c.lead_id).order_by(oldest, lead_hints.c.lead_id))
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as conn:
        return list(conn.execute(query).scalars())


def consume(conn: Connection, sent: Mapping[str, datetime], run_id: int,
            now: datetime) -> None:
    """Mark consumed, in the caller's transaction (the one that writes the fetches), the
    pending hints of each lead in `sent` received before its fetch was sent."""
    params = [{"b_lead": lead_id, "b_sent": at} for lead_id, at in sent.items()]
    if not params:
        return
    conn.execute(update(lead_hints).where(
        lead_hints.c.lead_id == bindparam("b_lead"), lead_hints.c.consumed_at.is_(None),
        lead_hints.c.received_at <= bindparam("b_sent")).values(consumed_at=now,
                                                                run_id=run_id), params)


def settle_orphans(conn: Connection, before: datetime, run_id: int, now: datetime) -> int:
    """A complete pass started at `before` fetched every lead of the query: a hint
    received before it that names a task no lead holds is about no lead we mirror."""
    result = conn.execute(update(lead_hints).where(
        lead_hints.c.lead_id.is_(None), lead_hints.c.consumed_at.is_(None),
        lead_hints.c.received_at <= before).values(consumed_at=now, run_id=run_id))
    return int(result.rowcount or 0)


def prune(engine: Engine, now: datetime | None = None) -> int:
    """Forget hints consumed more than KEEP_CONSUMED ago."""
    cutoff = (now or utcnow()) - KEEP_CONSUMED
    with engine.begin() as conn:
        result = conn.execute(delete(lead_hints).where(lead_hints.c.consumed_at < cutoff))
        return int(result.rowcount or 0)


def pending(engine: Engine) -> dict[str, Any]:
    """Pending hints, the leads they name, and when the oldest was received."""
    with engine.connect() as conn:
        row = conn.execute(select(func.count(), func.count(lead_hints.c.lead_id.distinct()),
                                  func.min(lead_hints.c.received_at))
                           .where(lead_hints.c.consumed_at.is_(None))).one()
    return {"hints": int(row[0]), "leads": int(row[1]), "oldest": row[2]}


def count_outcomes(engine: Engine, counts: Mapping[str, int], now: datetime) -> None:
    """Add `counts` (outcome -> webhooks) to lsq_webhook_outcomes."""
    counts = {k: v for k, v in counts.items() if v}
    if not counts:
        return
    with engine.begin() as conn:
        known = set(conn.execute(select(webhook_outcomes.c.outcome).where(
            webhook_outcomes.c.outcome.in_(list(counts)))).scalars())
        for outcome, n in counts.items():
            if outcome in known:
                conn.execute(update(webhook_outcomes).where(
                    webhook_outcomes.c.outcome == outcome).values(
                    count=webhook_outcomes.c.count + n, last_at=now))
            else:
                conn.execute(insert(webhook_outcomes).values(outcome=outcome, count=n,
                                                             last_at=now))


def outcomes(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {row[0]: int(row[1]) for row in conn.execute(
            select(webhook_outcomes.c.outcome, webhook_outcomes.c.count))}

