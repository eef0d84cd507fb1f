"""verify: a uniform random sample of leads, each fetched and compared field by field with
lsq_tasks before it is written; the share of stale tasks and leads, with 95% intervals."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine

from lsq_sync.core.estimate import Share, lead_share, task_share
from lsq_sync.core.run import Run, Tx
from lsq_sync.errors import ApiError, FatalError
from lsq_sync.leadsquared.client import LsqClient
from lsq_sync.store import leads, verifications
from lsq_sync.store.tasks import LeadOutcome, local_tasks, raw_hash, write_batch
from lsq_sync.store.types import utcnow

COMPARED = ("lead_id", "name", "description", "due_date", "created_on", "owner_id",
            "owner_name", "created_by", "created_by_name", "status", "reminder_minutes")


@dataclass
class Drift:
    """What the sample found: per sampled lead its tasks and stale tasks, and the kinds."""

    population: int = 0
    sampled: int = 0
    failed: int = 0
    tasks: list[int] = field(default_factory=list)
    stale: list[int] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)    # missing, deleted, differing
    fields: Counter[str] = field(default_factory=Counter)   # which fields differed

    @property
    def task_share(self) -> Share:
        return task_share(self.stale, self.tasks, self.population)

    @property
    def lead_share(self) -> Share:
        return lead_share(sum(1 for s in self.stale if s), len(self.tasks), self.population)

    def as_dict(self) -> dict[str, Any]:
        tasks_, leads_ = self.task_share, self.lead_share
        return {"population": self.population, "sampled": self.sampled,
                "failed": self.failed, "tasks": sum(self.tasks),
                "stale_tasks": sum(self.stale),
                "stale_share": tasks_.value, "stale_low": tasks_.low,
                "stale_high": tasks_.high,
                "stale_leads": sum(1 for s in self.stale if s),
                "lead_share": leads_.value, "lead_low": leads_.low, "lead_high": leads_.high,
                "missing": self.kinds["missing"], "deleted": self.kinds["deleted"],
                "differing": self.kinds["differing"], "fields": dict(self.fields)}


def compare(fetched: list[dict[str, Any]], bad: Mapping[str, str],
            local: Mapping[str, Mapping[str, Any]]) -> tuple[int, int, Counter[str],
                                                             Counter[str]]:
    """One lead: (tasks, stale tasks, kinds, differing fields). A task here but deleted
    there, there but missing (or marked deleted) here, or with any field different."""
    kinds: Counter[str] = Counter()
    fields: Counter[str] = Counter()
    remote = {row["task_id"]: row for row in fetched}
    live = {tid for tid, row in local.items() if row["deleted_at"] is None}
    for task_id, row in remote.items():
        mine = local.get(task_id)
        if mine is None or mine["deleted_at"] is not None:
            kinds["missing"] += 1
            continue
        differs = [name for name in COMPARED if row.get(name) != mine.get(name)]
        if not differs and mine.get("raw_hash") != raw_hash(row["raw"]):
            differs = ["raw"]  # a field no column holds
        if differs:
            kinds["differing"] += 1
            fields.update(differs)
    kinds["deleted"] += len(live - set(remote) - set(bad))
    kinds += Counter()  # drop a zero count
    tasks = len((set(remote) | live) - set(bad))
    return tasks, sum(kinds.values()), kinds, fields


class Verifier:
    """Draws the sample, fetches and compares in the run's workers, then writes."""

    def __init__(self, run: Run, *, leads_engine: Engine, query: str, client: LsqClient,
                 sample: int, seed: int | None = None, history: bool = False) -> None:
        self.run = run
        self.engine = run.engine
        self.leads_engine = leads_engine
        self.query = query
        self.client = client
        self.size = sample
        self.rng = random.Random(seed)
        self.history = history
        self.drift = Drift()

    def draw(self) -> list[str]:
        """A uniform sample without replacement from the query's valid, distinct ids
        (reservoir sampling: the query is read once, never held whole)."""
        chosen: list[str] = []
        seen: set[str] = set()
        count = 0
        for batch in leads.stream_query(self.leads_engine, self.query, {"last_success": None}):
            for value in batch:
                lead_id, _why = leads.check_lead_id(value)
                if lead_id is None or lead_id in seen:
                    continue
                seen.add(lead_id)
                count += 1
                if len(chosen) < self.size:
                    chosen.append(lead_id)
                else:
                    j = self.rng.randrange(count)
                    if j < self.size:
                        chosen[j] = lead_id
        self.drift.population = count
        return chosen

    def verify(self) -> Drift:
        chosen = self.draw()
        with self.run.begin() as tx:
            tx.add(leads_total=len(chosen))
        jobs: Iterator[tuple[int, str]] = iter(enumerate(chosen, 1))
        self.run.drive(lambda job: self._fetch(*job), jobs, self._handle)
        return self.drift

    def _fetch(self, seq: int, lead_id: str) -> LeadOutcome:
        try:
            found = self.client.retrieve_task_list(lead_id)
        except FatalError:
            raise
        except ApiError as exc:
            self.run.log.warning("lead_failed", lead_id=lead_id, error=type(exc).__name__,
                                 message=self.client.redact(str(exc)))
            return LeadOutcome(seq, lead_id, error=f"{type(exc).__name__}: {exc}")
        return LeadOutcome(seq, lead_id, rows=found.rows, skipped=found.bad,
                           sent_at=found.sent_at)

    def _handle(self, outcomes: list[LeadOutcome]) -> None:
        """Compare before writing (both in one transaction: nothing else writes between)."""
        drift = self.drift

        def work(tx: Tx) -> None:
            good = [o for o in outcomes if o.ok]
            local = local_tasks(tx.conn, [o.lead_id for o in good])
            for o in good:
                tasks, stale, kinds, fields = compare(o.rows or [], o.skipped,
                                                      local.get(o.lead_id, {}))
                drift.tasks.append(tasks)
                drift.stale.append(stale)
                drift.kinds.update(kinds)
                drift.fields.update(fields)
            drift.sampled += len(good)
            drift.failed += len(outcomes) - len(good)
            written = write_batch(tx.conn, outcomes, run_id=self.run.id, now=utcnow(),
                                  history=self.history)
            tx.add(leads_ok=len(good), leads_failed=len(outcomes) - len(good),
                   tasks_upserted=written.upserted, tasks_deleted=written.deleted,
                   tasks_skipped=written.skipped)

        self.run.write(work)

    def save(self) -> None:
        verifications.save(self.engine, self.run.id, self.drift.as_dict())
