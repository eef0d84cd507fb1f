"""Run lifecycle shared by the commands: open the store, record the run, summarise it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog
from sqlalchemy.engine import Engine

from lsq_sync import db, runs, schema
from lsq_sync.client import LsqClient
from lsq_sync.config import Config
from lsq_sync.errors import LsqSyncError
from lsq_sync.logs import get_logger
from lsq_sync.progress import Progress
from lsq_sync.pull import Puller, PullOptions
from lsq_sync.ratelimit import RateLimiter
from lsq_sync.runs import RunCounts


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
    ctx = ctx or Context()
    log = get_logger("lsq_sync.pull")
    cfg.lsq.require_credentials()
    engine = open_store(cfg)
    source = leads_engine(cfg, engine)
    counts = RunCounts()
    client = make_client(cfg, ctx, log)
    try:
        with recorded_run(engine, "pull", counts, log) as run:
            progress = Progress("pull", tty=ctx.tty, calls=lambda: client.stats.calls, log=log)
            puller = Puller(engine=engine, leads_engine=source, query=cfg.leads.query,
                            client=client, counts=counts, log=log, progress=progress,
                            options=options)
            try:
                puller.stage(run.id)
                puller.run(run.id)
            finally:
                counts.api_calls = client.stats.calls
                counts.throttled = client.stats.throttled
    finally:
        client.close()
    return RunResult(run.id, runs.status_for(counts, aborted=False), counts)
