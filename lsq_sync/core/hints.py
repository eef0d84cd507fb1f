"""`listen`'s puller: fetch the leads webhooks hinted at, within seconds, oldest hint first,
in one long run that shares the rate budget with every other run."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from lsq_sync.config import Config
from lsq_sync.control import StopReason
from lsq_sync.core.app import Context, make_client
from lsq_sync.core.progress import Progress
from lsq_sync.core.pull import Puller, PullOptions
from lsq_sync.core.result import RunResult
from lsq_sync.core.run import Run
from lsq_sync.errors import StoreError
from lsq_sync.leadsquared.client import LsqClient
from lsq_sync.logs import Logger
from lsq_sync.states import Command
from lsq_sync.store import hints, worklist
from lsq_sync.store.db import describe

ROUND_LEADS = 100     # leads per round: a round's leads are written before the next starts
IDLE_S = 1.0          # without a wake-up, look for hints (other listeners') this often
FIRST_RETRY_S = 5.0   # a lead whose fetch failed waits this long, doubling, ...
MAX_RETRY_S = 600.0   # ... up to this; its hint stays pending meanwhile
HOUSEKEEPING_S = 60.0
DB_RETRY_S = 5.0      # a database that does not answer is asked again this often


@dataclass
class Backoff:
    """Leads whose last fetch failed, and when each may be tried again (monotonic)."""

    until: dict[str, float] = field(default_factory=dict)
    wait: dict[str, float] = field(default_factory=dict)

    def failed(self, lead_id: str, now: float) -> None:
        wait = min(MAX_RETRY_S, self.wait.get(lead_id, FIRST_RETRY_S / 2) * 2)
        self.wait[lead_id] = wait
        self.until[lead_id] = now + wait

    def done(self, lead_id: str) -> None:
        self.until.pop(lead_id, None)
        self.wait.pop(lead_id, None)

    def due(self, lead_ids: list[str], now: float) -> list[str]:
        return [lead for lead in lead_ids if self.until.get(lead, 0.0) <= now]


class HintPuller:
    """Pulls hinted leads in rounds until `ctx.stop`; `wake` is set when hints arrive."""

    def __init__(self, cfg: Config, engine: Engine, ctx: Context, log: Logger,
                 wake: threading.Event | None = None) -> None:
        self.cfg = cfg
        self.engine = engine
        self.ctx = ctx
        self.log = log
        self.wake = wake or threading.Event()
        self.backoff = Backoff()
        self.rounds = 0

    def run(self) -> RunResult:
        """One `listen` run (its own lock: beside a pass and the cron push), closed when
        the stop is set."""
        opened = Run.open(self.engine, Command.LISTEN, self.log, stop=self.ctx.stop,
                          workers=self.cfg.lsq.workers,
                          max_calls_per_day=self.cfg.lsq.max_calls_per_day)
        # Urgent: a hinted lead is where a change is known to wait, so its fetch takes the
        # next free slot of the shared budget before a pass's.
        with opened as run, make_client(self.cfg, self.ctx, self.log, self.engine,
                                        run.stats, urgent=True) as client:
            housekeeping = 0.0
            while not self.ctx.stop.is_set():
                try:
                    if time.monotonic() - housekeeping >= HOUSEKEEPING_S:
                        housekeeping = time.monotonic()
                        hints.resolve(self.engine)
                        hints.prune(self.engine)
                    leads = self.backoff.due(hints.pending_leads(self.engine,
                                                                 ROUND_LEADS * 4),
                                             time.monotonic())[:ROUND_LEADS]
                    if not leads:
                        self.wake.wait(IDLE_S)
                        self.wake.clear()
                        continue
                    self._round(run, client, leads)
                except (SQLAlchemyError, StoreError) as exc:
                    # The database went away: the hints wait in it (or were never
                    # acknowledged); listen stays up and tries again.
                    error = exc if isinstance(exc, StoreError) else describe(exc)
                    self.log.error("hint_pull_failed", error=str(error),
                                   action=f"trying again in {DB_RETRY_S:g} s")
                    # A round that met it stopped the run (FATAL, as a pass must); listen
                    # outlives it unless a signal came meanwhile.
                    if self.ctx.stop.forgive_fatal():
                        self.ctx.stop.wait(DB_RETRY_S)
            if self.ctx.stop.reason == StopReason.SIGNAL:
                run.stopped = None  # a listener stopped by SIGTERM ended as it should
        return RunResult(run.id, Command.LISTEN, run.status, run.current(), run.stopped,
                         retries=run.stats.retries)

    def _round(self, run: Run, client: LsqClient, leads: list[str]) -> None:
        self.rounds += 1
        worklist.clear(self.engine, run.id)
        before = run.current()
        puller = Puller(run, leads_engine=self.engine, query="", connect=lambda: client,
                        progress=Progress(Command.LISTEN, tty=False),
                        options=PullOptions(lead_ids=leads, quiet=True, flush_s=0.25),
                        history=self.cfg.store.history)
        puller.stage()
        puller.pull()
        now = time.monotonic()
        failed = {row["lead_id"] for row in worklist.failed(self.engine, run.id)}
        for lead in leads:
            if lead in failed:
                self.backoff.failed(lead, now)
            else:
                self.backoff.done(lead)
        after = run.current()
        self.log.info("hinted_leads_pulled", leads=len(leads),
                      ok=after.leads_ok - before.leads_ok,
                      failed=after.leads_failed - before.leads_failed,
                      tasks_written=after.tasks_upserted - before.tasks_upserted,
                      calls=after.api_calls - before.api_calls)
