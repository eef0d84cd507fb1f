"""Run lifecycle shared by the commands: open the store, record the run, summarise it."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog
from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from lsq_sync import db, health, lock, runs, schema
from lsq_sync.budget import SharedSlots, bucket_for
from lsq_sync.client import LsqClient
from lsq_sync.config import Config
from lsq_sync.errors import FatalError, LockedError, LsqSyncError
from lsq_sync.logs import Logger, get_logger
from lsq_sync.models import locks, sync_runs
from lsq_sync.progress import Progress
from lsq_sync.pull import Puller, PullOptions
from lsq_sync.push import Pusher
from lsq_sync.ratelimit import DEFAULT_MARGIN_S, RateLimiter
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
    stopped: str | None = None      # why it ended before doing everything (cap, signal)
    by_signal: bool = False


@dataclass
class Context:
    """What a run needs besides its config; tests replace the transport."""

    tty: bool = False
    transport: httpx.BaseTransport | None = None
    stop: threading.Event = field(default_factory=threading.Event)  # set by SIGINT/SIGTERM


def make_client(cfg: Config, ctx: Context, log: Logger, engine: Engine | None = None,
                max_calls: int | None = None) -> LsqClient:
    shared = None
    if engine is not None and cfg.lsq.shared_budget:
        shared = SharedSlots(engine, bucket_for(cfg.lsq.access_key.reveal()),
                             cfg.lsq.rate_limit_calls, cfg.lsq.rate_limit_period_s,
                             DEFAULT_MARGIN_S)
    limiter = RateLimiter(cfg.lsq.rate_limit_calls, cfg.lsq.rate_limit_period_s, shared=shared)

    def on_event(event: str, **fields: Any) -> None:
        (log.warning if event == "throttled" else log.info)(event, **fields)

    return LsqClient(cfg.lsq, limiter, transport=ctx.transport, on_event=on_event,
                     max_calls=max_calls)


@dataclass
class Run:
    """The open row in lsq_sync_runs for the run under way."""

    id: int
    counts: RunCounts
    error: str | None = None
    stopped: str | None = None
    status: str = "failed"


LOCKS = {"pull": ["pull"], "push": ["push"], "sync": ["push", "pull"]}


@contextmanager
def recorded_run(engine: Engine, command: str, counts: RunCounts, log: Logger) -> Iterator[Run]:
    """Start a row in lsq_sync_runs, take the command's locks, keep a heartbeat, bind the
    run id to every log line, and close the row whatever happens."""
    for dead in lock.reap(engine):
        log.warning("abandoned_run_found", dead_run=dead)
    runs.prune(engine)
    run = Run(runs.start(engine, command), counts)
    try:
        for name in LOCKS[command]:
            lock.acquire(engine, name, run.id)
    except LockedError:
        with engine.begin() as conn:  # it never ran: leave no row behind
            conn.execute(delete(sync_runs).where(sync_runs.c.id == run.id))
            conn.execute(delete(locks).where(locks.c.run_id == run.id))
        raise
    heartbeat = lock.Heartbeat(engine, run.id, log).start()
    structlog.contextvars.bind_contextvars(run_id=run.id)
    started = time.monotonic()
    log.info("run_started", command=command, pid=os.getpid(), host=lock.HOST)
    keep = False
    try:
        yield run
        run.status = runs.status_for(counts, aborted=False, stopped=run.stopped is not None)
        run.error = run.stopped
        keep = run.stopped is not None
    except LsqSyncError as exc:
        run.error = str(exc)
        keep = isinstance(exc, FatalError)  # its leads stay for the next run to resume
        raise
    except KeyboardInterrupt:
        run.error = "interrupted; the next pull continues with the leads left"
        keep = True
        raise
    except Exception as exc:
        run.error = f"internal error: {type(exc).__name__}: {exc}"
        keep = True
        raise
    finally:
        heartbeat.stop()
        elapsed = time.monotonic() - started
        try:
            runs.finish(engine, run.id, run.status, counts, run.error, keep_leads=keep)
            lock.release(engine, run.id)
        except Exception as exc:  # the database went away: say so, keep the real error
            log.error("run_not_recorded", error=db.describe(exc))
        level = {"succeeded": log.info, "partial": log.warning}.get(run.status, log.error)
        level("run_finished", command=command, status=run.status,
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


def preview_push(cfg: Config, emit: Callable[[str], Any], *, offline: bool = False,
                 ctx: Context | None = None) -> int:
    """push --dry-run: read each lead with pending edits (unless `offline`), print each
    task's merge and the call it would make; no Update is sent and nothing is written."""
    engine = open_store(cfg)
    log = get_logger("lsq_sync.push")
    client = None
    if not offline:
        cfg.lsq.require_credentials()
        client = make_client(cfg, ctx or Context(), log, engine)
    try:
        pusher = Pusher(engine=engine, client=client, counts=RunCounts(), log=log,
                        notify_by=cfg.push.notify_by,
                        max_edit_attempts=cfg.push.max_edit_attempts,
                        on_conflict=cfg.push.on_conflict)
        return pusher.preview(emit)
    finally:
        if client is not None:
            client.close()


def call_cap(cfg: Config, engine: Engine, run_id: int) -> int | None:
    """How many calls this run may make: [lsq].max_calls_per_run and what is left of
    [lsq].max_calls_per_day (counted over the runs started since UTC midnight)."""
    caps = []
    if cfg.lsq.max_calls_per_run:
        caps.append(cfg.lsq.max_calls_per_run)
    if cfg.lsq.max_calls_per_day:
        midnight = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
        caps.append(max(0, cfg.lsq.max_calls_per_day - runs.calls_since(engine, midnight,
                                                                          but=run_id)))
    return min(caps) if caps else None


def _run(cfg: Config, command: str, ctx: Context, options: PullOptions | None = None
         ) -> RunResult:
    log = get_logger(f"lsq_sync.{command}")
    cfg.lsq.require_credentials()
    engine = open_store(cfg)
    source = leads_engine(cfg, engine) if command != "push" else engine
    counts = RunCounts()
    try:
        return _work(cfg, command, ctx, options, engine, source, counts, log)
    finally:
        publish_metrics(cfg, engine, log)


def publish_metrics(cfg: Config, engine: Engine, log: Logger) -> None:
    """Write [metrics].textfile from what the database says now; a failure is logged,
    never the run's."""
    if not cfg.metrics.textfile:
        return
    try:
        health.write_textfile(cfg.metrics.textfile, health.report(engine))
    except (LsqSyncError, SQLAlchemyError) as exc:
        log.error("metrics_not_written", path=cfg.metrics.textfile,
                  error=str(exc) if isinstance(exc, LsqSyncError) else db.describe(exc))


def _work(cfg: Config, command: str, ctx: Context, options: PullOptions | None,
          engine: Engine, source: Engine, counts: RunCounts, log: Logger) -> RunResult:
    with recorded_run(engine, command, counts, log) as run:
        client = make_client(cfg, ctx, log, engine, call_cap(cfg, engine, run.id))
        try:
            if command in ("push", "sync"):
                pusher = Pusher(engine=engine, client=client, counts=counts, log=log,
                                notify_by=cfg.push.notify_by,
                                max_edit_attempts=cfg.push.max_edit_attempts,
                                on_conflict=cfg.push.on_conflict,
                                stop=ctx.stop, history=cfg.store.history)
                pusher.run(run.id)
                run.stopped = pusher.stopped
            if command in ("pull", "sync") and run.stopped is None:
                progress = Progress(command, tty=ctx.tty,
                                    calls=lambda: client.stats.calls, log=log)
                puller = Puller(engine=engine, leads_engine=source, query=cfg.leads.query,
                                client=client, counts=counts, log=log, progress=progress,
                                options=options or PullOptions(), stop=ctx.stop,
                                history=cfg.store.history,
                                overlap=cfg.leads.overlap)
                puller.stage(run.id)
                puller.run(run.id)
                run.stopped = puller.stopped
        finally:
            counts.api_calls = client.stats.calls
            counts.throttled = client.stats.throttled
            client.close()
    return RunResult(run.id, run.status, counts, run.stopped,
                     by_signal=ctx.stop.is_set())
