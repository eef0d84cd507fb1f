"""What the commands call: open the store, build the client, and run pull, push or sync."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from lsq_sync.config import Config
from lsq_sync.control import Stats, Stop, StopReason
from lsq_sync.core.progress import Progress
from lsq_sync.core.pull import Puller, PullOptions
from lsq_sync.core.result import RunResult
from lsq_sync.core.run import Run
from lsq_sync.errors import LsqSyncError
from lsq_sync.logs import Logger, get_logger
from lsq_sync.states import Command
from lsq_sync.store import db, health, schema

# Imported where they are used: a pull with nothing to do (cron every minute) never
# builds a client, and a pull never pushes; together they cost a run 30 ms of CPU.
if TYPE_CHECKING:
    import httpx

    from lsq_sync.core.push import Preview, Pusher
    from lsq_sync.leadsquared.client import LsqClient


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
class Context:
    """What a run needs besides its config; tests replace the transport."""

    tty: bool = False
    transport: httpx.BaseTransport | None = None
    stop: Stop = field(default_factory=Stop)  # set by SIGINT/SIGTERM


def make_client(cfg: Config, ctx: Context, log: Logger, engine: Engine | None = None,
                stats: Stats | None = None, *, urgent: bool = False) -> LsqClient:
    """A client paced by [lsq]'s rate limit (shared through `engine` when
    [lsq].shared_budget, first in line for freed slots when `urgent`), whose waits end at
    `ctx.stop`, counting calls into `stats`."""
    from lsq_sync.leadsquared.budget import SharedSlots, bucket_for
    from lsq_sync.leadsquared.client import LsqClient
    from lsq_sync.leadsquared.ratelimit import DEFAULT_MARGIN_S, RateLimiter
    shared = None
    if engine is not None and cfg.lsq.shared_budget:
        shared = SharedSlots(engine, bucket_for(cfg.lsq.access_key.reveal()),
                             cfg.lsq.rate_limit_calls, cfg.lsq.rate_limit_period_s,
                             DEFAULT_MARGIN_S, urgent=urgent)
    limiter = RateLimiter(cfg.lsq.rate_limit_calls, cfg.lsq.rate_limit_period_s,
                          shared=shared, stop=ctx.stop)

    levels = {"throttled": log.warning, "request": log.debug}

    def on_event(event: str, **fields: Any) -> None:
        levels.get(event, log.info)(event, **fields)

    return LsqClient(cfg.lsq, limiter, transport=ctx.transport, on_event=on_event,
                     stats=stats)


def call_budget(cfg: Config) -> float:
    """Calls per second the freshest allocation spreads over the leads: the account's
    limit, or less when [lsq].max_calls_per_day says so."""
    rate = cfg.lsq.rate_limit_calls / cfg.lsq.rate_limit_period_s
    if cfg.lsq.max_calls_per_day:
        rate = min(rate, cfg.lsq.max_calls_per_day / 86400)
    return rate


def pull(cfg: Config, options: PullOptions, ctx: Context | None = None) -> RunResult:
    """One pull run: stage the lead ids, fetch and write every lead's tasks."""
    return _run(cfg, Command.PULL, ctx or Context(), options=options)


def push(cfg: Config, ctx: Context | None = None) -> RunResult:
    """One push run: send every pending edit."""
    return _run(cfg, Command.PUSH, ctx or Context())


def sync(cfg: Config, options: PullOptions, ctx: Context | None = None) -> RunResult:
    """Push, then pull, in one run (see the README for why in that order)."""
    return _run(cfg, Command.SYNC, ctx or Context(), options=options)


def verify(cfg: Config, *, sample: int, seed: int | None = None,
           ctx: Context | None = None) -> RunResult:
    """One verify run: `sample` leads drawn at random from the leads query, each fetched
    and compared with lsq_tasks before it is written; the estimate is stored and returned."""
    from lsq_sync.core.verify import Verifier
    ctx = ctx or Context()
    log = get_logger("lsq_sync.verify")
    cfg.lsq.require_credentials()
    engine = open_store(cfg)
    source = leads_engine(cfg, engine)
    try:
        opened = Run.open(engine, Command.VERIFY, log, stop=ctx.stop, workers=cfg.lsq.workers,
                          max_calls_per_day=cfg.lsq.max_calls_per_day)
        with opened as run, make_client(cfg, ctx, log, engine, run.stats) as client:
            verifier = Verifier(run, leads_engine=source, query=cfg.leads.query, client=client,
                                sample=sample, seed=seed, history=cfg.store.history)
            drift = verifier.verify()
            if run.stopped is None:
                verifier.save()
            found = drift.as_dict()
            log.info("verified", **{k: v for k, v in found.items() if k != "fields"})
    finally:
        publish_metrics(cfg, engine, log)
    return RunResult(run.id, Command.VERIFY, run.status, run.current(), run.stopped,
                     by_signal=run.stopped is not None
                     and ctx.stop.reason == StopReason.SIGNAL, retries=run.stats.retries,
                     drift=found)


def preview_push(cfg: Config, emit: Callable[[Preview], Any], *, offline: bool = False,
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
        return _pusher(cfg, engine, client, log).preview(emit)
    finally:
        if client is not None:
            client.close()


def _run(cfg: Config, command: str, ctx: Context, options: PullOptions | None = None
         ) -> RunResult:
    log = get_logger(f"lsq_sync.{command}")
    cfg.lsq.require_credentials()
    engine = open_store(cfg)
    source = leads_engine(cfg, engine) if Command(command).pulls else engine
    try:
        return _work(cfg, command, ctx, options, engine, source, log)
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


def _pusher(cfg: Config, engine: Engine, client: LsqClient | None, log: Logger) -> Pusher:
    from lsq_sync.core.push import Pusher
    return Pusher(engine=engine, client=client, log=log, notify_by=cfg.push.notify_by,
                  max_edit_attempts=cfg.push.max_edit_attempts,
                  on_conflict=cfg.push.on_conflict, history=cfg.store.history,
                  max_read_age_s=cfg.push.max_read_age_s)


def _work(cfg: Config, command: str, ctx: Context, options: PullOptions | None,
          engine: Engine, source: Engine, log: Logger) -> RunResult:
    # --calls N: this run's own cap, under [lsq].max_calls_per_run when that is lower.
    caps = [c for c in (cfg.lsq.max_calls_per_run, options.calls if options else None) if c]
    opened = Run.open(engine, command, log, stop=ctx.stop, workers=cfg.lsq.workers,
                      max_calls_per_run=min(caps, default=0),
                      max_calls_per_day=cfg.lsq.max_calls_per_day)
    with opened as run, ExitStack() as stack:
        made: list[LsqClient] = []

        def client() -> LsqClient:  # made on first use, closed with the run
            if not made:
                made.append(stack.enter_context(make_client(cfg, ctx, log, engine,
                                                            run.stats)))
            return made[0]

        if Command(command).pushes:
            _pusher(cfg, engine, client(), log).push(run)
        if Command(command).pulls and run.stopped is None:
            progress = Progress(command, tty=ctx.tty, calls=lambda: run.stats.calls,
                                log=log)
            puller = Puller(run, leads_engine=source, query=cfg.leads.query,
                            connect=client, progress=progress,
                            options=options or PullOptions(),
                            history=cfg.store.history, overlap=cfg.leads.overlap,
                            refresh=cfg.refresh, budget=call_budget(cfg))
            puller.stage()
            puller.pull()
    # A signal that came when nothing was left to do stopped nothing: the run is done.
    return RunResult(run.id, Command(command), run.status, run.current(), run.stopped,
                     by_signal=run.stopped is not None
                     and ctx.stop.reason == StopReason.SIGNAL, retries=run.stats.retries)
