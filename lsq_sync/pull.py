"""The pull: stage lead ids, fetch their tasks concurrently, write them in batches."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from lsq_sync import leads, runs, worklist
from lsq_sync.client import LsqClient
from lsq_sync.db import describe
from lsq_sync.errors import ApiError, FatalError, StoreError
from lsq_sync.progress import Progress
from lsq_sync.runs import RunCounts
from lsq_sync.store import LeadOutcome, write_batch
from lsq_sync.types import utcnow
from lsq_sync.workers import Workers

if TYPE_CHECKING:
    from lsq_sync.logs import Logger

MAX_SKIP_WARNINGS = 20
# Passes in a row that try a failing lead again even when the query no longer returns it;
# after that only the query brings it back (`runs show` and lsq_failed_leads list it).
MAX_LEAD_RETRIES = 5


@dataclass
class PullOptions:
    lead_ids: list[str] | None = None   # instead of [leads].query
    limit: int | None = None
    restart: bool = False               # ignore what an unfinished pull left to do
    batch_size: int = 200               # leads per transaction
    flush_s: float = 2.0                # ... or this often, whichever comes first
    grace_s: float = 5.0                # on a stop, how long requests in flight may take


class Puller:
    """One pull run. Workers only fetch; the calling thread does every database write."""

    def __init__(self, *, engine: Engine, leads_engine: Engine, query: str,
                 client: LsqClient, counts: RunCounts, log: Logger,
                 progress: Progress, options: PullOptions | None = None,
                 stop: threading.Event | None = None, history: bool = False,
                 overlap: timedelta = timedelta(0)) -> None:
        self.engine = engine
        self.leads_engine = leads_engine
        self.query = query
        self.client = client
        self.counts = counts
        self.log = log
        self.progress = progress
        self.options = options or PullOptions()
        self.stop = stop or threading.Event()
        self.params: dict[str, Any] = {}
        self.history = history
        self.overlap = overlap
        self.stopped: str | None = None     # why the run ended before its last lead
        # A pass goes over the whole query; --lead-id and --limit runs do not (they never
        # move :last_success, and what they leave is not resumed).
        self.is_pass = self.options.lead_ids is None and self.options.limit is None
        self._skip_warnings = 0

    # -- staging -------------------------------------------------------------------------

    def _on_skip(self, value: Any, why: str | None) -> None:
        self._skip_warnings += 1
        if self._skip_warnings <= MAX_SKIP_WARNINGS:
            shown = repr(value)[:80]
            self.log.warning("lead_id_skipped", value=shown, reason=why)
        elif self._skip_warnings == MAX_SKIP_WARNINGS + 1:
            self.log.warning("lead_id_skipped", reason="more skipped ids are counted, not "
                             "logged one by one")

    def _sources(self) -> Iterable[list[Any]]:
        if self.options.lead_ids is not None:
            return [list(self.options.lead_ids)]
        return leads.stream_query(self.leads_engine, self.query, self.params)

    def stage(self, run_id: int) -> worklist.Staged:
        """List this run's leads. A pass: first what an unfinished pass left (with the
        :last_success that pass started with), then the leads that failed lately, then
        the query's rest. Other runs: the given ids, or the query's first --limit leads."""
        previous = None
        start = done = 0
        if self.is_pass:
            if self.options.restart:
                dropped = worklist.forget_unfinished(self.engine, run_id)
                if dropped:
                    self.log.info("resume_skipped", leads_dropped=dropped, reason="--restart")
            else:
                previous = worklist.unfinished_run(self.engine, run_id)
            if previous is not None:
                start, done = worklist.carry_over(self.engine, previous, run_id,
                                               retry_below=MAX_LEAD_RETRIES)
                self.log.info("resuming", from_run=previous, leads_done_before=done)
            self.params["last_success"] = runs.begin_pass(self.engine, run_id, previous,
                                                          self.overlap)
            retry = worklist.to_retry(self.engine, MAX_LEAD_RETRIES)
            if retry:
                again = worklist.stage(self.engine, run_id, [retry], start=start, stop=self.stop)
                start = max(start, again.last_seq)
                self.log.info("retrying_failed_leads", leads=len(retry))
        else:
            self.params["last_success"] = runs.last_success(self.engine, self.overlap)
        staged = worklist.stage(self.engine, run_id, self._sources(), limit=self.options.limit,
                             on_skip=self._on_skip, start=start, stop=self.stop)
        staged.total = worklist.count_todo(self.engine, run_id)
        self.counts.leads_total = staged.total
        self.counts.leads_skipped = staged.skipped + staged.duplicates
        self.log.info("leads_staged", leads=staged.total, skipped_invalid=staged.skipped,
                      skipped_duplicates=staged.duplicates, done_by_earlier_runs=done)
        return staged

    # -- fetching ------------------------------------------------------------------------

    def _fetch(self, seq: int, lead_id: str) -> LeadOutcome:
        try:
            found = self.client.retrieve_task_list(lead_id)
            for task_id, why in found.bad.items():
                self.log.warning("task_skipped", lead_id=lead_id, task_id=task_id, reason=why,
                                 action="its last good row is kept; fix it in LeadSquared")
            for task_id in found.cleaned:
                self.log.warning("nul_replaced", lead_id=lead_id, task_id=task_id,
                                 action="NUL characters stored as U+FFFD")
            return LeadOutcome(seq, lead_id, rows=found.rows, skipped=found.bad)
        except FatalError:
            raise
        except ApiError as exc:
            self.log.warning("lead_failed", lead_id=lead_id, error=type(exc).__name__,
                             exception_type=exc.exception_type, status=exc.status_code,
                             message=self.client.redact(str(exc)))
            return LeadOutcome(seq, lead_id, error=f"{type(exc).__name__}: {exc}")

    def run(self, run_id: int) -> RunCounts:
        """Fetch every staged lead of `run_id`; raises FatalError after saving what is done.

        The first request goes alone: a rejected key or a host where nothing answers
        stops the run after one call, before the workers fan out."""
        opts = self.options
        todo: Iterator[tuple[int, str]] = worklist.pending(self.engine, run_id)
        self.progress.start(self.counts.leads_total)
        workers: Workers[tuple[int, str], LeadOutcome] = Workers(
            lambda item: self._fetch(*item), self.client.cfg.workers,
            self.client.limiter.stop)
        buffer: list[LeadOutcome] = []
        last_flush = time.monotonic()
        abort: BaseException | None = None
        exhausted = False
        answered = False  # until the first lead is back, one request at a time
        stopping_since: float | None = None
        try:
            while True:
                if stopping_since is None and (self.stop.is_set()
                                               or self.client.cap_reached.is_set()):
                    stopping_since = time.monotonic()
                    self.stopped = self._why_stopped()
                    self.log.warning("stopping", reason=self.stopped,
                                     in_flight=workers.in_flight)
                    workers.drop_queued()
                while (stopping_since is None and not exhausted and abort is None
                       and workers.has_room() and (answered or workers.in_flight == 0)):
                    nxt = next(todo, None)
                    if nxt is None:
                        exhausted = True
                        break
                    workers.submit(nxt)
                if workers.in_flight == 0:
                    break
                if stopping_since is not None and \
                        time.monotonic() - stopping_since > opts.grace_s:
                    self.log.warning("abandoned_in_flight", requests=workers.in_flight)
                    break  # those leads stay to do; the next pull takes them first
                done, fatal = workers.collect(timeout=0.5, fatal=FatalError)
                answered = answered or bool(done)
                buffer.extend(done)
                if fatal is not None:
                    abort = abort or fatal
                    self.client.limiter.stop.set()
                now = time.monotonic()
                if len(buffer) >= opts.batch_size or (buffer and now - last_flush
                                                      >= opts.flush_s):
                    self._flush(run_id, buffer)
                    buffer = []
                    last_flush = now
        finally:
            if abort is not None or not exhausted:
                self.client.limiter.stop.set()
            workers.close()
        if buffer:
            self._flush(run_id, buffer)
        self.progress.finish()
        if abort is not None:
            raise abort
        if self.is_pass and self.stopped is None and exhausted:
            runs.complete_pass(self.engine, run_id)
        return self.counts

    def _why_stopped(self) -> str:
        if self.client.cap_reached.is_set():
            return (f"stopped after {self.client.max_calls} API calls (the run's call cap); "
                    f"the next pull continues with the rest")
        return "stopped by a signal; the next pull continues with the rest"

    def _flush(self, run_id: int, outcomes: list[LeadOutcome]) -> None:
        """Write a batch in one transaction; if it fails, write it lead by lead, so that
        what broke it fails alone."""
        self.counts.api_calls = self.client.stats.calls
        self.counts.throttled = self.client.stats.throttled
        try:
            self._write(run_id, outcomes)
            return
        except SQLAlchemyError as exc:
            self.log.warning("batch_write_failed", leads=len(outcomes), error=describe(exc),
                             action="writing lead by lead")
        for outcome in outcomes:
            self._write_alone(run_id, outcome)

    def _write_alone(self, run_id: int, outcome: LeadOutcome) -> None:
        """One lead. Tasks the database refuses are skipped (each keeps its last good row);
        a lead that still cannot be written is marked failed; a database that cannot even
        take that mark is down: StoreError."""
        try:
            self._write(run_id, [outcome])
            return
        except SQLAlchemyError as exc:
            error = exc
        if outcome.rows:
            refused = self._refused(run_id, outcome)
            if refused and len(refused) < len(outcome.rows):
                for task_id, why in refused.items():
                    self.log.warning("task_skipped", lead_id=outcome.lead_id, task_id=task_id,
                                     reason=why, action="its last good row is kept")
                kept = LeadOutcome(outcome.seq, outcome.lead_id,
                                   rows=[r for r in outcome.rows if r["task_id"] not in refused],
                                   skipped={**outcome.skipped, **refused})
                try:
                    self._write(run_id, [kept])
                    return
                except SQLAlchemyError as exc:
                    error = exc
        self.log.warning("lead_failed", lead_id=outcome.lead_id, error="StoreError",
                         message=describe(error))
        failed = LeadOutcome(outcome.seq, outcome.lead_id, error=f"StoreError: {describe(error)}")
        try:
            self._write(run_id, [failed])
        except SQLAlchemyError as again:
            raise StoreError(f"cannot write to the database: {describe(again)}") from None

    def _refused(self, run_id: int, outcome: LeadOutcome) -> dict[str, str]:
        """The lead's tasks the database refuses, each tried alone in a transaction that
        is rolled back (a probe: nothing is kept)."""
        refused: dict[str, str] = {}
        for row in outcome.rows or ():
            probe = LeadOutcome(outcome.seq, outcome.lead_id, rows=[row])
            try:
                with self.engine.connect() as conn, conn.begin() as trans:
                    write_batch(conn, [probe], run_id=run_id, now=utcnow())
                    trans.rollback()
            except SQLAlchemyError as exc:
                refused[row["task_id"]] = f"refused by the database: {describe(exc)}"
        return refused

    def _write(self, run_id: int, outcomes: list[LeadOutcome]) -> None:
        ok = sum(1 for o in outcomes if o.ok)
        failed = len(outcomes) - ok
        with self.engine.begin() as conn:
            result = write_batch(conn, outcomes, run_id=run_id, now=utcnow(),
                                 history=self.history)
            after = replace(self.counts,
                            leads_ok=self.counts.leads_ok + ok,
                            leads_failed=self.counts.leads_failed + failed,
                            tasks_upserted=self.counts.tasks_upserted + result.upserted,
                            tasks_deleted=self.counts.tasks_deleted + result.deleted,
                            tasks_skipped=self.counts.tasks_skipped + result.skipped)
            runs.save_counts(conn, run_id, after)
        # Only what was committed is counted.
        for name in ("leads_ok", "leads_failed", "tasks_upserted", "tasks_deleted",
                     "tasks_skipped"):
            setattr(self.counts, name, getattr(after, name))
        self.progress.advance(ok=ok, failed=failed)
