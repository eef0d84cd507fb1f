"""Run lifecycle shared by the commands: open the store, record the run, summarise it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from lsq_sync import db, edits, runs, schema
from lsq_sync.client import LsqClient
from lsq_sync.config import Config
from lsq_sync.errors import ConfigError, LsqSyncError
from lsq_sync.logs import get_logger
from lsq_sync.models import task_edits, tasks
from lsq_sync.progress import Progress
from lsq_sync.pull import Puller, PullOptions
from lsq_sync.push import Pusher
from lsq_sync.ratelimit import RateLimiter
from lsq_sync.runs import RunCounts
from lsq_sync.types import utcnow


def open_store(cfg: Config) -> Engine:
    """The tasks database, reachable and at the current schema, or an error saying why."""
    engine = db.make_engine(cfg.database.url)
    db.check_connection(engine)
    schema.require_current(engine)
    return engine


def leads_engine(cfg: Config, engine: Engine) -> Engine:
    if not cfg.leads.url or cfg.leads.url == cfg.database.url:
        return engine
    return db.make_engine(cfg.leads.url, key="[leads].url")


@dataclass
class RunResult:
    run_id: int
    status: str
    counts: RunCounts
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    """What a run needs besides its config; tests replace the transport."""

    tty: bool = False
    transport: httpx.BaseTransport | None = None


def make_client(cfg: Config, ctx: Context, log: Any) -> LsqClient:
    limiter = RateLimiter(cfg.lsq.rate_limit_calls, cfg.lsq.rate_limit_period_s)

    def on_event(event: str, **fields: Any) -> None:
        (log.warning if event == "throttled" else log.info)(event, **fields)

    return LsqClient(cfg.lsq, limiter, transport=ctx.transport, on_event=on_event)


@dataclass
class Run:
    """The open row in lsq_sync_runs for the run under way."""

    id: int
    counts: RunCounts
    error: str | None = None


@contextmanager
def recorded_run(engine: Engine, command: str, counts: RunCounts, log: Any) -> Iterator[Run]:
    """Start a row in lsq_sync_runs, bind its id to every log line, close it at the end."""
    run = Run(runs.start(engine, command), counts)
    structlog.contextvars.bind_contextvars(run_id=run.id)
    started = time.monotonic()
    log.info("run_started", command=command)
    status = "failed"
    try:
        yield run
        status = runs.status_for(counts, aborted=False)
    except LsqSyncError as exc:
        run.error = str(exc)
        raise
    except KeyboardInterrupt:
        run.error = "interrupted"
        raise
    finally:
        elapsed = time.monotonic() - started
        try:
            runs.finish(engine, run.id, status, counts, run.error)
        except Exception as exc:  # the database went away: say so, keep the real error
            log.error("run_not_recorded", error=db.describe(exc))
        log.info("run_finished", command=command, status=status,
                 duration_s=round(elapsed, 3),
                 calls_per_s=round(counts.api_calls / elapsed, 2) if elapsed else None,
                 error=run.error, **counts.as_dict())
        structlog.contextvars.unbind_contextvars("run_id")


def pull(cfg: Config, options: PullOptions, ctx: Context | None = None) -> RunResult:
    """One pull run: stage the lead ids, fetch and write every lead's tasks."""
    return _run(cfg, "pull", ctx or Context(), options=options)


def push(cfg: Config, ctx: Context | None = None) -> RunResult:
    """One push run: send every pending edit."""
    return _run(cfg, "push", ctx or Context())


def sync(cfg: Config, options: PullOptions, ctx: Context | None = None) -> RunResult:
    """Push, then pull, in one run (see the README for why in that order)."""
    return _run(cfg, "sync", ctx or Context(), options=options)


def preview_push(cfg: Config, emit: Callable[[str], Any]) -> int:
    """push --dry-run: print each call it would make; no API call, no write."""
    engine = open_store(cfg)
    pusher = Pusher(engine=engine, client=None, counts=RunCounts(), log=get_logger(),
                    notify_by=cfg.push.notify_by, max_edit_attempts=cfg.push.max_edit_attempts)
    return pusher.preview(emit)


def queue_edit(cfg: Config, task_id: str, fields: dict[str, Any]) -> int:
    """Check an edit and insert it as pending; ConfigError says what is wrong with it."""
    try:
        checked = edits.check(fields)
    except edits.InvalidEdit as exc:
        raise ConfigError(f"{exc}; nothing was queued") from None
    engine = open_store(cfg)
    with engine.begin() as conn:
        task = conn.execute(select(tasks.c.deleted_at).where(tasks.c.task_id == task_id)).first()
        if task is None:
            raise ConfigError(f"task {task_id} is not in lsq_tasks; pull its lead first "
                              f"(lsq-sync pull --lead-id LEAD); nothing was queued")
        if task.deleted_at is not None:
            raise ConfigError(f"task {task_id} was deleted in LeadSquared; nothing was queued")
        result = conn.execute(insert(task_edits).values(
            task_id=task_id, status="pending", attempts=0, created_at=utcnow(), **checked))
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])


def _run(cfg: Config, command: str, ctx: Context, options: PullOptions | None = None
         ) -> RunResult:
    log = get_logger(f"lsq_sync.{command}")
    cfg.lsq.require_credentials()
    engine = open_store(cfg)
    source = leads_engine(cfg, engine) if command != "push" else engine
    counts = RunCounts()
    client = make_client(cfg, ctx, log)
    try:
        with recorded_run(engine, command, counts, log) as run:
            try:
                if command in ("push", "sync"):
                    Pusher(engine=engine, client=client, counts=counts, log=log,
                           notify_by=cfg.push.notify_by,
                           max_edit_attempts=cfg.push.max_edit_attempts).run(run.id)
                if command in ("pull", "sync"):
                    progress = Progress(command, tty=ctx.tty,
                                        calls=lambda: client.stats.calls, log=log)
                    puller = Puller(engine=engine, leads_engine=source, query=cfg.leads.query,
                                    client=client, counts=counts, log=log, progress=progress,
                                    options=options or PullOptions())
                    puller.stage(run.id)
                    puller.run(run.id)
            finally:
                counts.api_calls = client.stats.calls
                counts.throttled = client.stats.throttled
    finally:
        client.close()
    return RunResult(run.id, runs.status_for(counts, aborted=False), counts)
