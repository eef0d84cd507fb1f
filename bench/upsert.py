"""Upsert throughput per dialect, in tasks per second, with batches of 500 tasks.

Two measurements per database, each first as inserts and then as updates of every row:
- `upsert`: the INSERT ... ON CONFLICT / ON DUPLICATE KEY UPDATE alone (`upsert.upsert`),
  one transaction per batch;
- `write_batch`: what a pull does per batch of 100 leads (5 tasks each): read the leads'
  stored tasks, compare, upsert what changed, mark the leads done; plus a third pass in
  which nothing changed (every cron run after the first).

Pass database URLs (SQLite, PostgreSQL, MySQL/MariaDB); each must be an empty database:
the benchmark migrates it.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete
from sqlalchemy.engine import Engine

from lsq_sync.leadsquared.tasks import parse_task_list
from lsq_sync.store import db, runs, schema
from lsq_sync.store.models import tasks
from lsq_sync.store.tasks import LeadOutcome, raw_hash, write_batch
from lsq_sync.store.types import utcnow
from lsq_sync.store.upsert import upsert

TASKS_PER_LEAD = 5


def outcomes(count: int, version: int) -> list[LeadOutcome]:
    """`count` leads of 5 tasks each; `version` changes every task's name."""
    result = []
    for i in range(count):
        lead = f"{i:08x}-5151-4000-8000-000000000009"
        items = [{"TaskID": f"{i:08x}-{n:04x}-4000-9000-000000000009", "Name": f"v{version}",
                  "Description": "benchmark task", "DueDate": "2027-01-01 10:00:00",
                  "CreatedOn": "2026-01-01 10:00:00.000",
                  "OwnerID": "190e7b6f-39da-11e6-b61b-22000aa8e760", "OwnerName": "Asha Rao",
                  "CreatedBy": "190e7b6f-39da-11e6-b61b-22000aa8e760",
                  "CreatedByName": "Asha Rao", "Status": "Pending", "Reminder": "15"}
                 for n in range(TASKS_PER_LEAD)]
        result.append(LeadOutcome(i + 1, lead, rows=parse_task_list({"TaskList": items}, lead)))
    return result


def settle(engine: Engine) -> None:
    """What autovacuum does within a minute of a real backfill (untimed): without it,
    PostgreSQL plans lookups by lead on a table it believes empty with sequential scans."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                "VACUUM ANALYZE lsq_tasks")


def timed(label: str, engine: Engine, count: int, batch: int,
          work: Callable[[int, int], None]) -> None:
    start = time.perf_counter()
    for k in range(0, count, batch):
        work(k, min(count, k + batch))
    elapsed = time.perf_counter() - start
    settle(engine)
    print(f"{engine.dialect.name:10s} {label:22s} {count} tasks in {elapsed:5.2f}s = "
          f"{count / elapsed:7,.0f} tasks/s")


def bench_upsert(engine: Engine, count: int, batch: int) -> None:
    for version, label in ((1, "upsert insert"), (2, "upsert update")):
        now = utcnow()
        rows = [{**task, "raw_hash": raw_hash(task["raw"]), "first_seen_at": now,
                 "last_synced_at": now, "changed_at": now, "deleted_at": None}
                for o in outcomes(count // TASKS_PER_LEAD, version) for task in o.rows or ()]

        def work(lo: int, hi: int, rows: list[dict[str, Any]] = rows) -> None:
            with engine.begin() as conn:
                upsert(conn, tasks, rows[lo:hi], keep=["first_seen_at"])
        timed(label, engine, len(rows), batch, work)
    with engine.begin() as conn:
        conn.execute(delete(tasks))
    settle(engine)


def bench_write_batch(engine: Engine, count: int, batch: int) -> None:
    run_id = runs.start(engine, "bench")
    leads_per_batch = max(1, batch // TASKS_PER_LEAD)
    for version, label in ((1, "write_batch insert"), (2, "write_batch update"),
                           (2, "write_batch unchanged")):
        leads = outcomes(count // TASKS_PER_LEAD, version)

        def work(lo: int, hi: int, leads: list[LeadOutcome] = leads) -> None:
            with engine.begin() as conn:
                write_batch(conn, leads[lo // TASKS_PER_LEAD:hi // TASKS_PER_LEAD],
                            run_id=run_id, now=utcnow())
        timed(label, engine, len(leads) * TASKS_PER_LEAD, leads_per_batch * TASKS_PER_LEAD,
              work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("urls", nargs="+")
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    for url in args.urls:
        engine = db.make_engine(url)
        schema.upgrade(engine)
        bench_upsert(engine, args.tasks, args.batch)
        bench_write_batch(engine, args.tasks, args.batch)
        engine.dispose()


if __name__ == "__main__":
    main()
