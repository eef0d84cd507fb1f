"""The pull: stage lead ids, fetch their tasks concurrently, write them in batches."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from lsq_sync.config import RefreshConfig
from lsq_sync.core import freshest
from lsq_sync.core.progress import Progress
from lsq_sync.core.run import GRACE_S, Run, Tx
from lsq_sync.errors import ApiError, ConfigError, FatalError, StoreError
from lsq_sync.store import hints, leads, leadstate, runs, worklist
from lsq_sync.store.db import chunks, describe
from lsq_sync.store.tasks import LeadOutcome, write_batch
from lsq_sync.store.types import utcnow

if TYPE_CHECKING:
    from lsq_sync.leadsquared.client import LsqClient

MAX_SKIP_WARNINGS = 20
# Passes in a row that try a failing lead again even when the query no longer returns it;
# after that only the query brings it back (`runs show` and lsq_failed_leads list it).
MAX_LEAD_RETRIES = 5


@dataclass
class PullOptions:
    lead_ids: list[str] | None = None   # instead of [leads].query
    limit: int | None = None
    restart: bool = False               # ignore what an unfinished pull left to do
    full: bool = False                  # a new pass with :last_success bound to NULL
    calls: int | None = None            # at most this many API calls in this run
    hints: bool = False                 # the leads with pending hints, oldest hint first
    quiet: bool = False                 # per-run log lines at debug (listen's many rounds)
    batch_size: int = 200               # leads per transaction
    flush_s: float = 2.0                # ... or this often, whichever comes first
    grace_s: float = GRACE_S            # on a stop, how long requests in flight may take

    def __post_init__(self) -> None:
        if self.full and (self.lead_ids or self.limit):
            raise ConfigError("full (--full) is a pass over the whole leads query: not with "
                              "lead ids (--lead-id) or a limit (--limit)")
        if self.hints and (self.full or self.lead_ids):
            raise ConfigError("hints (--hints) pulls the leads with pending hints: not with "
                              "lead ids (--lead-id) or a full pass (--full)")


class Puller:
    """The pull part of a run. Workers only fetch; the run's thread does every write."""

    def __init__(self, run: Run, *, leads_engine: Engine, query: str,
                 connect: Callable[[], LsqClient],
                 progress: Progress, options: PullOptions | None = None,
                 history: bool = False, overlap: timedelta = timedelta(0),
                 refresh: RefreshConfig | None = None, budget: float = 0.0) -> None:
        self.run = run
        self.engine = run.engine
        self.log = run.log
        self.leads_engine = leads_engine
        self.query = query
        # What gives the client, asked once there is a lead to fetch: a pull with nothing
        # to do never loads the HTTP stack.
        self._connect = connect
        self.client: LsqClient | None = None
        self.progress = progress
        self.options = options or PullOptions()
        self.params: dict[str, Any] = {}
        self.history = history
        self.overlap = overlap
        # A pass goes over the whole query; --lead-id and --limit runs do not (they never
        # move :last_success, and what they leave is not resumed).
        plain = self.options.lead_ids is None and self.options.limit is None \
            and not self.options.hints
        # "freshest" chooses leads (unless --full asks for a pass); it is also a pass when
        # the query selects by :last_success: the leads it names are fetched first, and
        # the watermark moves as a pass moves it (README, "Freshness").
        self.freshest = plain and not self.options.full and refresh is not None \
            and refresh.strategy == "freshest"
        self.refresh = refresh
        self.budget = budget
        self.is_pass = plain and (not self.freshest or leads.uses_param(query, "last_success"))
        self._skip_warnings = 0
        self._buffer: list[LeadOutcome] = []
        self._last_flush = time.monotonic()

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
        if self.options.hints or self.freshest:
            resolved = hints.resolve(self.engine)
            if resolved:
                self.log.info("hints_resolved", hints=resolved)
            hinted = hints.pending_leads(self.engine)
            if self.options.hints:
                return [hinted]
            return self._freshest(hinted)
        return leads.stream_query(self.leads_engine, self.query, self.params)

    def _freshest(self, hinted: list[str]) -> Iterable[list[Any]]:
        """Hinted leads, then (a pass) the leads the query names by :last_success, then the
        policy's choice among all of the query's leads (freshest.order)."""
        assert self.refresh is not None
        yield hinted
        if self.is_pass:
            yield from leads.stream_query(self.leads_engine, self.query, self.params)
        candidates = []
        for batch in leads.stream_query(self.leads_engine, self.query, {"last_success": None}):
            for value in batch:
                lead_id, _why = leads.check_lead_id(value)
                if lead_id is not None:
                    candidates.append(lead_id)
        known = {lead: freshest.History(p.fetched_at, p.fetches, p.changes, p.quiet_s,
                                        p.change_gaps, p.tasks)
                 for lead, p in leadstate.everything(self.engine).items()}
        budget = self.budget
        if self.run.stats.cap:
            # A capped pull (--calls, a cron line's share of the budget): the rate the
            # allocation spreads is what the pulls have kept up, not the account's limit.
            kept = freshest.observed_budget(known)
            budget = min(budget, kept) if kept else budget
        chosen = freshest.order(candidates, known, utcnow(), budget=budget,
                                max_interval=self.refresh.max_wait, limit=self.run.stats.cap)
        self.log.info("freshest_chosen", candidates=len(set(candidates)), chosen=len(chosen),
                      hinted=len(hinted), budget_per_s=round(budget, 4))
        yield chosen

    def stage(self) -> worklist.Staged:
        """List this run's leads. A pass: first what an unfinished pass left (with the
        :last_success that pass started with), then the leads that failed lately, then
        the query's rest. Other runs: the given ids, or the query's first --limit leads."""
        run_id, stop = self.run.id, self.run.stop
        previous = None
        start = done = 0
        cut = False
        if self.is_pass:
            if self.options.restart or self.options.full:
                dropped = worklist.forget_unfinished(self.engine, run_id)
                if dropped:
                    self.log.info("resume_skipped", leads_dropped=dropped,
                                  reason="--full" if self.options.full else "--restart")
            else:
                previous = worklist.unfinished_run(self.engine, run_id)
            if previous is not None:
                start, done = worklist.carry_over(self.engine, previous, run_id,
                                               retry_below=MAX_LEAD_RETRIES)
                self.log.info("resuming", from_run=previous, leads_done_before=done)
            self.params["last_success"] = runs.begin_pass(self.engine, run_id, previous,
                                                          self.overlap, full=self.options.full)
            retry = worklist.to_retry(self.engine, MAX_LEAD_RETRIES)
            if retry:
                again = worklist.stage(self.engine, run_id, [retry], start=start, stop=stop)
                start = max(start, again.last_seq)
                cut = again.cut
                self.log.info("retrying_failed_leads", leads=len(retry))
        else:
            self.params["last_success"] = runs.last_success(self.engine, self.overlap)
        staged = worklist.stage(self.engine, run_id, self._sources(), limit=self.options.limit,
                                on_skip=self._on_skip, start=start, stop=stop)
        if staged.cut or cut:  # not every lead was staged: the pass is not complete
            self.run.stopped = self.run.stopped or self.run.why_stopped()
        staged.total = worklist.count_todo(self.engine, run_id)
        with self.run.begin() as tx:
            tx.add(leads_total=staged.total, leads_skipped=staged.skipped + staged.duplicates)
        (self.log.debug if self.options.quiet else self.log.info)(
            "leads_staged", leads=staged.total, skipped_invalid=staged.skipped,
            skipped_duplicates=staged.duplicates, done_by_earlier_runs=done)
        return staged

    # -- fetching ------------------------------------------------------------------------

    def _fetch(self, seq: int, lead_id: str) -> LeadOutcome:
        client = self.client
        assert client is not None  # pull() asked for it before the first job
        try:
            found = client.retrieve_task_list(lead_id)
            for task_id, why in found.bad.items():
                self.log.warning("task_skipped", lead_id=lead_id, task_id=task_id, reason=why,
                                 action="its last good row is kept; fix it in LeadSquared")
            for task_id in found.cleaned:
                self.log.warning("nul_replaced", lead_id=lead_id, task_id=task_id,
                                 action="NUL characters stored as U+FFFD")
            return LeadOutcome(seq, lead_id, rows=found.rows, skipped=found.bad,
                               sent_at=found.sent_at)
        except FatalError:
            raise
        except ApiError as exc:
            self.log.warning("lead_failed", lead_id=lead_id, error=type(exc).__name__,
                             exception_type=exc.exception_type, status=exc.status_code,
                             message=client.redact(str(exc)))
            return LeadOutcome(seq, lead_id, error=f"{type(exc).__name__}: {exc}")

    def pull(self) -> None:
        """Fetch every staged lead and write what comes back in batches; raises FatalError
        after saving what is done."""
        todo: Iterator[tuple[int, str]] = worklist.pending(self.engine, self.run.id)
        first = next(todo, None)
        self.progress.start(self.run.counts.leads_total)
        if first is None:  # nothing to fetch: no client, no worker threads
            complete = self.run.stopped is None
        else:
            self.client = self._connect()
            try:
                complete = self.run.drive(lambda item: self._fetch(*item),
                                          itertools.chain([first], todo), self._buffer.extend,
                                          grace_s=self.options.grace_s, tick=self._maybe_flush)
            except FatalError:
                self._flush()
                raise
        self._flush()
        self.progress.finish()
        if self.is_pass and complete:
            started = runs.complete_pass(self.engine, self.run.id)
            if started is not None:
                self._settle_orphan_hints(started)
        elif self.freshest and complete:
            # Every chosen lead done: a success for `status`, with no pass_started_at, so
            # :last_success (a pass's watermark) does not move.
            runs.complete_pass(self.engine, self.run.id)

    def _settle_orphan_hints(self, started: datetime) -> None:
        """Hints naming a task no lead of a complete pass holds: about no lead we mirror."""
        with self.engine.begin() as conn:
            settled = hints.settle_orphans(conn, started, self.run.id, utcnow())
        if settled:
            self.log.info("hints_settled", hints=settled,
                          reason="they name a task that no lead of the leads query holds")

    def _maybe_flush(self) -> None:
        if len(self._buffer) >= self.options.batch_size or (
                self._buffer and time.monotonic() - self._last_flush >= self.options.flush_s):
            self._flush()

    def _flush(self) -> None:
        """Write the batch in one transaction; if it fails, write it lead by lead, so that
        what broke it fails alone."""
        buffered = list(self._buffer)
        self._buffer.clear()
        self._last_flush = time.monotonic()
        # At most batch_size leads a transaction, however many came in since the last tick.
        for outcomes in chunks(buffered, self.options.batch_size):
            try:
                self._write(list(outcomes))
                continue
            except SQLAlchemyError as exc:
                self.log.warning("batch_write_failed", leads=len(outcomes),
                                 error=describe(exc), action="writing lead by lead")
            for outcome in outcomes:
                self._write_alone(outcome)

    def _write_alone(self, outcome: LeadOutcome) -> None:
        """One lead. Tasks the database refuses are skipped (each keeps its last good row);
        a lead that still cannot be written is marked failed; a database that cannot even
        take that mark is down: StoreError."""
        try:
            self._write([outcome])
            return
        except SQLAlchemyError as exc:
            error = exc
        if outcome.rows:
            refused = self._refused(outcome)
            if refused and len(refused) < len(outcome.rows):
                for task_id, why in refused.items():
                    self.log.warning("task_skipped", lead_id=outcome.lead_id, task_id=task_id,
                                     reason=why, action="its last good row is kept")
                kept = LeadOutcome(outcome.seq, outcome.lead_id,
                                   rows=[r for r in outcome.rows if r["task_id"] not in refused],
                                   skipped={**outcome.skipped, **refused})
                try:
                    self._write([kept])
                    return
                except SQLAlchemyError as exc:
                    error = exc
        self.log.warning("lead_failed", lead_id=outcome.lead_id, error="StoreError",
                         message=describe(error))
        failed = LeadOutcome(outcome.seq, outcome.lead_id, error=f"StoreError: {describe(error)}")
        try:
            self._write([failed])
        except SQLAlchemyError as again:
            raise StoreError(f"cannot write to the database: {describe(again)}") from None

    def _refused(self, outcome: LeadOutcome) -> dict[str, str]:
        """The lead's tasks the database refuses, each tried alone in a transaction that
        is rolled back (a probe: nothing is kept)."""
        refused: dict[str, str] = {}
        for row in outcome.rows or ():
            probe = LeadOutcome(outcome.seq, outcome.lead_id, rows=[row])
            try:
                with self.engine.connect() as conn, conn.begin() as trans:
                    write_batch(conn, [probe], run_id=self.run.id, now=utcnow())
                    trans.rollback()
            except SQLAlchemyError as exc:
                refused[row["task_id"]] = f"refused by the database: {describe(exc)}"
        return refused

    def _write(self, outcomes: list[LeadOutcome]) -> None:
        ok = sum(1 for o in outcomes if o.ok)
        failed = len(outcomes) - ok

        def write(tx: Tx) -> None:
            result = write_batch(tx.conn, outcomes, run_id=self.run.id, now=utcnow(),
                                 history=self.history)
            tx.add(leads_ok=ok, leads_failed=failed, tasks_upserted=result.upserted,
                   tasks_deleted=result.deleted, tasks_skipped=result.skipped)

        self.run.write(write)  # a push writing the same leads may deadlock it: run again
        self.progress.advance(ok=ok, failed=failed)
