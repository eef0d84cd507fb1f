"""Records in lsq_sync_runs: one row per run, kept current while the run works."""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
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
    api_calls: int = 0
    throttled: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @property
    def failures(self) -> int:
        return self.leads_failed + self.edits_failed


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
           error: str | None = None) -> None:
    with engine.begin() as conn:
        conn.execute(update(sync_runs).where(sync_runs.c.id == run_id).values(
            status=status, finished_at=utcnow(), heartbeat_at=utcnow(),
            error=error[:2000] if error else None, **counts.as_dict()))
        conn.execute(delete(run_leads).where(run_leads.c.run_id == run_id))


def recent(engine: Engine, limit: int = 20) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(sync_runs).order_by(sync_runs.c.id.desc()).limit(limit))
        return [dict(row._mapping) for row in rows]


def status_for(counts: RunCounts, *, aborted: bool) -> str:
    if aborted:
        return "failed"
    return "partial" if counts.failures else "succeeded"


def duration(started: datetime | None, finished: datetime | None) -> float | None:
    if started is None or finished is None:
        return None
    return (finished - started).total_seconds()
