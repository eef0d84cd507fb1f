"""Records in lsq_sync_runs: one row per run, kept current while the run works."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, delete, func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from lsq_sync.states import Command, RunStatus
from lsq_sync.store.models import sync_runs
from lsq_sync.store.types import utcnow


@dataclass(frozen=True)
class RunCounts:
    """What a run did, as lsq_sync_runs records it. Immutable: a run adds to its counts
    by `plus`, in the transaction that does the work (see run.Run.begin)."""

    leads_total: int = 0
    leads_ok: int = 0
    leads_failed: int = 0
    leads_skipped: int = 0
    tasks_upserted: int = 0
    tasks_deleted: int = 0
    tasks_skipped: int = 0
    edits_sent: int = 0
    edits_failed: int = 0
    edits_conflict: int = 0
    api_calls: int = 0
    throttled: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def plus(self, **delta: int) -> RunCounts:
        return replace(self, **{name: getattr(self, name) + value
                                for name, value in delta.items()})

    @property
    def failures(self) -> int:
        return self.leads_failed + self.tasks_skipped + self.edits_failed + self.edits_conflict


HOST = socket.gethostname()[:255]  # recorded with every run and lock


def reap(engine: Engine, is_dead: Callable[[int | None, str | None, datetime | None,
                                             datetime], bool]) -> list[int]:
    """Mark runs left `running` by processes that died (`is_dead`, the leases' judgement)
    as failed; returns their ids."""
    now = utcnow()
    reaped = []
    with engine.begin() as conn:
        rows = conn.execute(select(sync_runs.c.id, sync_runs.c.pid, sync_runs.c.host,
                                   sync_runs.c.heartbeat_at)
                            .where(sync_runs.c.status == RunStatus.RUNNING)).all()
        for row in rows:
            if row.pid == os.getpid() and row.host == HOST:
                continue
            if is_dead(row.pid, row.host, row.heartbeat_at, now):
                seen = row.heartbeat_at.strftime("%Y-%m-%d %H:%M:%S") if row.heartbeat_at \
                    else "never"
                conn.execute(update(sync_runs).where(
                    sync_runs.c.id == row.id, sync_runs.c.status == RunStatus.RUNNING).values(
                    status=RunStatus.FAILED, finished_at=now,
                    error=f"abandoned: pid {row.pid} on {row.host} stopped without finishing "
                          f"(last heartbeat {seen} UTC)"))
                reaped.append(row.id)
    return reaped


def heartbeat(conn: Connection, run_id: int, now: datetime) -> None:
    conn.execute(update(sync_runs).where(sync_runs.c.id == run_id).values(heartbeat_at=now))


def start(engine: Engine, command: str) -> int:
    now = utcnow()
    with engine.begin() as conn:
        result = conn.execute(insert(sync_runs).values(
            command=command, started_at=now, heartbeat_at=now, status=RunStatus.RUNNING,
            pid=os.getpid(), host=HOST))
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])


def save_counts(conn: Connection, run_id: int, counts: RunCounts) -> None:
    conn.execute(update(sync_runs).where(sync_runs.c.id == run_id)
                 .values(heartbeat_at=utcnow(), **counts.as_dict()))


def forget(conn: Connection, run_id: int) -> None:
    """Delete the row of a run that never ran (another held its lock)."""
    conn.execute(delete(sync_runs).where(sync_runs.c.id == run_id))


def finish(conn: Connection, run_id: int, status: RunStatus, counts: RunCounts,
           error: str | None = None) -> None:
    """Close the run's row (in the transaction that also settles its lead list, see
    run.Run.open)."""
    conn.execute(update(sync_runs).where(sync_runs.c.id == run_id).values(
        status=status, finished_at=utcnow(), heartbeat_at=utcnow(),
        error=error[:2000] if error else None, **counts.as_dict()))


def last_success(engine: Engine, overlap: timedelta = timedelta(0)) -> datetime | None:
    """The `:last_success` parameter: when the last complete pass over [leads].query
    started (its first run, if it was resumed), `overlap` earlier. Runs with --lead-id or
    --limit are no pass and never move it; nor does a pass that was stopped, capped or
    killed until a later run completes it."""
    with engine.connect() as conn:
        value: datetime | None = conn.execute(
            select(func.max(sync_runs.c.pass_started_at)).where(
                sync_runs.c.command.in_([c for c in Command if c.pulls]),
                sync_runs.c.pass_complete.is_(True))).scalar()
    return None if value is None else value - overlap


def begin_pass(engine: Engine, run_id: int, continues: int | None,
               overlap: timedelta = timedelta(0), *, full: bool = False) -> datetime | None:
    """Make `run_id` a run of a pass: a new one that starts now (its query evaluated with
    the current :last_success, or NULL when `full`), or the pass of run `continues`.
    Returns the pass's :last_success."""
    with engine.begin() as conn:
        if continues is not None:
            row = conn.execute(select(sync_runs.c.pass_started_at, sync_runs.c.pass_since)
                               .where(sync_runs.c.id == continues)).one()
            started: datetime = row.pass_started_at
            since: datetime | None = row.pass_since
        else:
            started = conn.execute(select(sync_runs.c.started_at)
                                   .where(sync_runs.c.id == run_id)).scalar_one()
            since = None
    if continues is None and not full:
        since = last_success(engine, overlap)
    with engine.begin() as conn:
        conn.execute(update(sync_runs).where(sync_runs.c.id == run_id)
                     .values(pass_started_at=started, pass_since=since))
    return since


def complete_pass(engine: Engine, run_id: int) -> datetime | None:
    """Every lead of the run's pass was done (or failed, and kept for retry). Returns when
    the pass started."""
    with engine.begin() as conn:
        conn.execute(update(sync_runs).where(sync_runs.c.id == run_id)
                     .values(pass_complete=True))
        started: datetime | None = conn.execute(select(sync_runs.c.pass_started_at).where(
            sync_runs.c.id == run_id)).scalar()
        return started


def calls_since(engine: Engine, since: datetime, but: int) -> int:
    """API calls of the runs started since `since`, other than run `but`."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.coalesce(func.sum(sync_runs.c.api_calls), 0))
                                .where(sync_runs.c.started_at >= since,
                                       sync_runs.c.id != but)).scalar_one())


def finished(*where: Any) -> Select[tuple[int]]:
    """The ids of runs that ended (any way), among those `where` selects."""
    return select(sync_runs.c.id).where(sync_runs.c.status != RunStatus.RUNNING, *where)


def get(engine: Engine, run_id: int) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(select(sync_runs).where(sync_runs.c.id == run_id)).first()
        return dict(row._mapping) if row else None


def recent(engine: Engine, limit: int = 20) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(sync_runs).order_by(sync_runs.c.id.desc()).limit(limit))
        return [dict(row._mapping) for row in rows]


def status_for(counts: RunCounts, *, stopped: bool = False) -> RunStatus:
    """How a run that ended without an error went (one that raised is failed)."""
    return RunStatus.PARTIAL if counts.failures or stopped else RunStatus.SUCCEEDED


def duration(started: datetime | None, finished: datetime | None) -> float | None:
    if started is None or finished is None:
        return None
    return (finished - started).total_seconds()
