"""Records in lsq_sync_runs: one row per run, kept current while the run works."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from lsq_sync.lock import HOST
from lsq_sync.models import sync_runs
from lsq_sync.states import RunStatus
from lsq_sync.types import utcnow


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
                sync_runs.c.command.in_(("pull", "sync")),
                sync_runs.c.pass_complete.is_(True))).scalar()
    return None if value is None else value - overlap


def begin_pass(engine: Engine, run_id: int, continues: int | None,
               overlap: timedelta = timedelta(0)) -> datetime | None:
    """Make `run_id` a run of a pass: a new one that starts now (its query evaluated with
    the current :last_success), or the pass of run `continues`. Returns the pass's
    :last_success."""
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
    if continues is None:
        since = last_success(engine, overlap)
    with engine.begin() as conn:
        conn.execute(update(sync_runs).where(sync_runs.c.id == run_id)
                     .values(pass_started_at=started, pass_since=since))
    return since


def complete_pass(engine: Engine, run_id: int) -> None:
    """Every lead of the run's pass was done (or failed, and kept for retry)."""
    with engine.begin() as conn:
        conn.execute(update(sync_runs).where(sync_runs.c.id == run_id)
                     .values(pass_complete=True))


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


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def sentence(command: str, run_id: int, status: str, counts: RunCounts) -> str:
    """One line that says what a run did, for people (the JSON summary is run_finished)."""
    c = counts
    parts = []
    if command in ("pull", "sync"):
        parts.append(f"{c.leads_ok:,}/{c.leads_total:,} leads pulled, "
                     f"{_plural(c.tasks_upserted, 'task')} written, "
                     f"{c.tasks_deleted:,} marked deleted")
    if command in ("push", "sync"):
        parts.append(f"{_plural(c.edits_sent, 'edit')} sent")
    parts.append(f"{_plural(c.api_calls, 'API call')} ({c.throttled:,} throttled)")
    return f"{command} run {run_id} {status}: " + ", ".join(parts)


def what_failed(counts: RunCounts) -> str:
    """What made a run partial, e.g. '2 leads failed, 1 edit in conflict'."""
    c = counts
    parts = [text for n, text in (
        (c.leads_failed, f"{_plural(c.leads_failed, 'lead')} failed"),
        (c.tasks_skipped, f"{_plural(c.tasks_skipped, 'bad task')} skipped"),
        (c.edits_failed, f"{_plural(c.edits_failed, 'edit')} failed"),
        (c.edits_conflict, f"{_plural(c.edits_conflict, 'edit')} held as conflicts"),
    ) if n]
    return ", ".join(parts)


def status_for(counts: RunCounts, *, stopped: bool = False) -> RunStatus:
    """How a run that ended without an error went (one that raised is failed)."""
    return RunStatus.PARTIAL if counts.failures or stopped else RunStatus.SUCCEEDED


def duration(started: datetime | None, finished: datetime | None) -> float | None:
    if started is None or finished is None:
        return None
    return (finished - started).total_seconds()
