"""Upsert throughput per dialect: tasks per second through store.write_batch.

Batches of `--batch` tasks (500 by default) in one transaction each, first as inserts and
then as updates of every row. Pass database URLs (SQLite, PostgreSQL, MySQL/MariaDB);
each must be an empty database: the benchmark migrates it.
"""

from __future__ import annotations

import argparse
import time

from lsq_sync import db, runs, schema
from lsq_sync.store import LeadOutcome, write_batch
from lsq_sync.tasks import parse_task_list
from lsq_sync.types import utcnow


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
                 for n in range(5)]
        result.append(LeadOutcome(i + 1, lead, rows=parse_task_list({"TaskList": items}, lead)))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("urls", nargs="+")
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    leads_per_batch = max(1, args.batch // 5)
    for url in args.urls:
        engine = db.make_engine(url)
        schema.upgrade(engine)
        run_id = runs.start(engine, "bench")
        for version, label in ((1, "insert"), (2, "update")):
            batches = outcomes(args.tasks // 5, version)
            start = time.perf_counter()
            for k in range(0, len(batches), leads_per_batch):
                with engine.begin() as conn:
                    write_batch(conn, batches[k:k + leads_per_batch], run_id=run_id,
                                now=utcnow())
            elapsed = time.perf_counter() - start
            print(f"{engine.dialect.name:10s} {label}: {args.tasks} tasks in {elapsed:.2f}s = "
                  f"{args.tasks / elapsed:,.0f} tasks/s (batches of {args.batch})")
        engine.dispose()


if __name__ == "__main__":
    main()
