"""Records in lsq_sync_runs: one row per run, kept current while the run works."""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from lsq_sync.models import run_leads, sync_runs
from lsq_sync.types import utcnow


@dataclass
class RunCounts:
    leads_total: int = 0
    leads_ok: int = 0
    leads_failed: int = 0
    leads_skipped: int = 0
    tasks_upserted: int = 0
    tasks_deleted: int = 0
    edits_sent: int = 0
    edits_failed: int = 0
    edits_conflict: int = 0
    api_calls: int = 0
    throttled: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @property
    def failures(self) -> int:
        return self.leads_failed + self.edits_failed + self.edits_conflict


COUNT_NAMES = [f.name for f in fields(RunCounts)]


def start(engine: Engine, command: str) -> int:
    now = utcnow()
    with engine.begin() as conn:
        result = conn.execute(insert(sync_runs).values(
            command=command, started_at=now, heartbeat_at=now, status="running",
            pid=os.getpid(), host=socket.gethostname()[:255]))
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])


def save_counts(conn: Connection, run_id: int, counts: RunCounts) -> None:
    conn.execute(update(sync_runs).where(sync_runs.c.id == run_id)
                 .values(heartbeat_at=utcnow(), **counts.as_dict()))


def finish(engine: Engine, run_id: int, status: str, counts: RunCounts,
           error: str | None = None, *, keep_leads: bool = False) -> None:
    """Close the run's row. Its lead list goes, but for the failed leads (for `runs show`),
    unless `keep_leads`: a run that stopped early leaves it for the next pull to resume."""
    with engine.begin() as conn:
        conn.execute(update(sync_runs).where(sync_runs.c.id == run_id).values(
            status=status, finished_at=utcnow(), heartbeat_at=utcnow(),
            error=error[:2000] if error else None, **counts.as_dict()))
        if not keep_leads:
            conn.execute(delete(run_leads).where(run_leads.c.run_id == run_id,
                                                 run_leads.c.state != "failed"))


def last_success(engine: Engine) -> datetime | None:
    """When the last successful pull (or sync) started: the `:last_success` parameter."""
    with engine.connect() as conn:
        value: datetime | None = conn.execute(
            select(func.max(sync_runs.c.started_at)).where(
                sync_runs.c.command.in_(("pull", "sync")),
                sync_runs.c.status == "succeeded")).scalar()
    return value


def calls_since(engine: Engine, since: datetime, but: int) -> int:
    """API calls of the runs started since `since`, other than run `but`."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.coalesce(func.sum(sync_runs.c.api_calls), 0))
                                .where(sync_runs.c.started_at >= since,
                                       sync_runs.c.id != but)).scalar_one())


KEEP_FAILED_LEADS_OF = 100  # runs


def prune(engine: Engine) -> None:
    """Forget the failed-lead lists of old finished runs."""
    with engine.begin() as conn:
        newest = conn.execute(select(func.max(sync_runs.c.id))).scalar()
        if newest is None:
            return
        old = select(sync_runs.c.id).where(sync_runs.c.id < newest - KEEP_FAILED_LEADS_OF,
                                           sync_runs.c.status != "running")
        conn.execute(delete(run_leads).where(run_leads.c.run_id.in_(old),
                                             run_leads.c.state == "failed"))


def get(engine: Engine, run_id: int) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(select(sync_runs).where(sync_runs.c.id == run_id)).first()
        return dict(row._mapping) if row else None


def failed_leads(engine: Engine, run_id: int, limit: int = 1000) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(run_leads.c.lead_id, run_leads.c.error)
                            .where(run_leads.c.run_id == run_id, run_leads.c.state == "failed")
                            .order_by(run_leads.c.seq).limit(limit))
        return [dict(r._mapping) for r in rows]


def recent(engine: Engine, limit: int = 20) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(sync_runs).order_by(sync_runs.c.id.desc()).limit(limit))
        return [dict(row._mapping) for row in rows]


def status_for(counts: RunCounts, *, aborted: bool, stopped: bool = False) -> str:
    if aborted:
        return "failed"
    return "partial" if counts.failures or stopped else "succeeded"


def duration(started: datetime | None, finished: datetime | None) -> float | None:
    if started is None or finished is None:
        return None
    return (finished - started).total_seconds()
