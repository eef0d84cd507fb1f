"""The run under way: its row, counts, stop, lock, heartbeat, and the loop of pull and push."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import structlog
from sqlalchemy.engine import Connection, Engine

from lsq_sync.control import Stats, Stop, StopReason
from lsq_sync.core.workers import Workers
from lsq_sync.errors import FatalError, LockedError, LsqSyncError
from lsq_sync.states import Command, RunStatus
from lsq_sync.store import db, runs, worklist
from lsq_sync.store import leases as lock
from lsq_sync.store.runs import RunCounts
from lsq_sync.store.types import utcnow

if TYPE_CHECKING:
    from lsq_sync.logs import Logger

T = TypeVar("T")
In = TypeVar("In")
Out = TypeVar("Out")

LOCKS = {Command.PULL: ["pull"], Command.PUSH: ["push"], Command.SYNC: ["push", "pull"],
         Command.LISTEN: ["listen"], Command.VERIFY: ["verify"]}
GRACE_S = 5.0     # on a stop, how long requests in flight may take
TICK_S = 0.5      # how often the driver looks at the stop while requests are in flight

# What each command leaves when it stops early, for the run's error and the summary.
LEFT = {Command.PULL: "the next pull continues with the rest",
        Command.PUSH: "the remaining edits stay pending"}


@dataclass
class Tx:
    """One unit of work's transaction, and the counts it adds to its run's."""

    conn: Connection
    delta: dict[str, int] = field(default_factory=dict)

    def add(self, **counts: int) -> None:
        for name, value in counts.items():
            self.delta[name] = self.delta.get(name, 0) + value


class Run:
    """One run of pull, push or sync, from its row in lsq_sync_runs to its summary.

    Its counts change only by `begin()`: a transaction that saves the counts with the work
    they count; the run adopts them once that commits, so a rolled-back batch counts
    nothing. Its `stop` is the one switch every wait of the run ends at, and `stats` the
    API calls every thread makes (with the run's call cap)."""

    def __init__(self, engine: Engine, command: str, log: Logger, *,
                 stop: Stop | None = None, workers: int = 1) -> None:
        self.engine = engine
        self.command = command
        self.log = log
        self.stop = stop or Stop()
        self.stats = Stats(stop=self.stop)
        self.workers = workers
        self.id = 0
        self.counts = RunCounts()
        self.status = RunStatus.FAILED
        self.error: str | None = None
        self.stopped: str | None = None  # why it ended before doing everything

    # -- counts --------------------------------------------------------------------------

    def current(self) -> RunCounts:
        """The committed counts, with the calls made so far."""
        return self.counts.plus(api_calls=self.stats.calls - self.counts.api_calls,
                                throttled=self.stats.throttled - self.counts.throttled)

    @contextmanager
    def begin(self) -> Iterator[Tx]:
        """A transaction whose counts are saved in it and adopted after it commits."""
        with self.engine.begin() as conn:
            tx = Tx(conn)
            yield tx
            after = self.current().plus(**tx.delta)
            runs.save_counts(conn, self.id, after)
        self.counts = after

    def write(self, work: Callable[[Tx], T]) -> T:
        """`work` in a transaction of `begin()`, run again whole if the database aborts it
        over a lock conflict with another run (a pull and a push write the same leads)."""
        def once() -> T:
            with self.begin() as tx:
                return work(tx)

        return db.retry_conflicts(once)

    # -- stopping ------------------------------------------------------------------------

    def why_stopped(self) -> str | None:
        """The stop as the run's error says it, or None (not stopped, or by a failure)."""
        left = LEFT[Command.PUSH if self.command == Command.PUSH else Command.PULL]
        if self.stop.reason == StopReason.CALL_CAP:
            return f"stopped after {self.stats.cap} API calls (the run's call cap); {left}"
        if self.stop.reason == StopReason.DAILY_CAP:
            return (f"stopped after {self.stats.cap} API calls: the day's call cap "
                    f"([lsq].max_calls_per_day) is used up until UTC midnight; {left}")
        if self.stop.reason == StopReason.SIGNAL:
            return f"stopped by a signal; {left}"
        return None

    # -- the loop ------------------------------------------------------------------------

    def drive(self, work: Callable[[In], Out], jobs: Iterator[In],
              handle: Callable[[list[Out]], None], *, grace_s: float = GRACE_S,
              tick: Callable[[], None] | None = None) -> bool:
        """Do `work` on each of `jobs` in the worker threads and give what comes back to
        `handle` in this thread (the only one that writes). Returns whether every job was
        done.

        The first job goes alone: a rejected key or a host where nothing answers costs one
        call, before the workers fan out. On a stop the queued jobs are dropped and those
        in flight get `grace_s` to finish (what is abandoned stays for the next run). A
        FatalError, from a worker or from `handle`, stops the run; it is raised once what
        was in flight is handled."""
        workers: Workers[In, Out] = Workers(work, self.workers, self.stop)
        abort: FatalError | None = None
        exhausted = answered = False
        stopping_since: float | None = None
        try:
            while True:
                if stopping_since is None and self.stop.is_set():
                    stopping_since = time.monotonic()
                    if not exhausted and workers.in_flight == 0 \
                            and next(jobs, None) is None:
                        exhausted = True  # nothing was left: the stop stopped nothing
                        break
                    self.stopped = self.stopped or self.why_stopped()
                    if self.stopped is not None:
                        self.log.warning("stopping", reason=self.stopped,
                                         in_flight=workers.in_flight)
                    workers.drop_queued()
                while (stopping_since is None and not exhausted and workers.has_room()
                       and (answered or workers.in_flight == 0)):
                    job = next(jobs, None)
                    if job is None:
                        exhausted = True
                        break
                    workers.submit(job)
                if workers.in_flight == 0:
                    break
                if stopping_since is not None and time.monotonic() - stopping_since > grace_s:
                    self.log.warning("abandoned_in_flight", requests=workers.in_flight)
                    break  # those stay to do; the next run takes them first
                done, fatal = workers.collect(timeout=TICK_S, fatal=FatalError)
                answered = answered or bool(done)
                try:
                    if done:
                        handle(done)
                except FatalError as exc:
                    fatal = fatal or exc
                if isinstance(fatal, FatalError) and abort is None:
                    abort = fatal
                    self.stop.set(StopReason.FATAL)
                if tick is not None:
                    tick()
        finally:
            if not exhausted:
                self.stop.set(StopReason.FATAL)  # ends the waits of workers left behind
            workers.close()
        if abort is not None:
            raise abort
        return exhausted and self.stopped is None

    # -- lifecycle -----------------------------------------------------------------------

    @classmethod
    @contextmanager
    def open(cls, engine: Engine, command: str, log: Logger, *, stop: Stop | None = None,
             workers: int = 1, max_calls_per_run: int = 0,
             max_calls_per_day: int = 0) -> Iterator[Run]:
        """Start a row in lsq_sync_runs, take the command's locks, keep a heartbeat, bind
        the run id to every log line, and close the row whatever happens."""
        for dead in lock.reap(engine):
            log.warning("abandoned_run_found", dead_run=dead)
        worklist.prune(engine)
        run = cls(engine, command, log, stop=stop, workers=workers)
        run.id = runs.start(engine, command)
        try:
            for name in LOCKS[Command(command)]:
                lock.acquire(engine, name, run.id)
        except LockedError:
            with engine.begin() as conn:  # it never ran: leave no row behind
                runs.forget(conn, run.id)
                lock.release_all(conn, run.id)
            raise
        run.stats.cap, run.stats.cap_reason = call_cap(engine, run.id, max_calls_per_run,
                                                       max_calls_per_day)
        heartbeat = lock.Heartbeat(engine, run.id, log).start()
        structlog.contextvars.bind_contextvars(run_id=run.id)
        started = time.monotonic()
        log.info("run_started", command=command, pid=os.getpid(), host=lock.HOST)
        keep = False
        try:
            yield run
            run.status = runs.status_for(run.counts, stopped=run.stopped is not None)
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
            counts = run.current()
            try:
                with engine.begin() as conn:
                    runs.finish(conn, run.id, run.status, counts, run.error)
                    worklist.close(conn, run.id, keep=keep)
                lock.release(engine, run.id)
            except Exception as exc:  # the database went away: say so, keep the real error
                log.error("run_not_recorded", error=db.describe(exc))
            level = {RunStatus.SUCCEEDED: log.info,
                     RunStatus.PARTIAL: log.warning}.get(run.status, log.error)
            level("run_finished", command=command, status=run.status,
                  duration_s=round(elapsed, 3),
                  calls_per_s=round(counts.api_calls / elapsed, 2) if elapsed else None,
                  error=run.error, **counts.as_dict())
            structlog.contextvars.unbind_contextvars("run_id")


def call_cap(engine: Engine, run_id: int, per_run: int,
             per_day: int) -> tuple[int | None, StopReason]:
    """How many calls run `run_id` may make, and which cap that is: `per_run`, or what is
    left of `per_day` (counted over the runs started since UTC midnight); 0 means none."""
    cap, reason = (per_run or None), StopReason.CALL_CAP
    if per_day:
        midnight = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
        left = max(0, per_day - runs.calls_since(engine, midnight, but=run_id))
        if cap is None or left < cap:
            cap, reason = left, StopReason.DAILY_CAP
    return cap, reason
