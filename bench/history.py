"""Storage cost of [store] history: bytes per task version in lsq_task_history.

Writes `--leads` leads of 5 tasks each through `store.write_batch` with history on, then
`--versions - 1` passes that change every task, and reports the size of
lsq_task_history (table and indexes) per version and per million versions, and the
write rate with and without history. Pass empty database URLs; each is migrated.
"""

from __future__ import annotations

import argparse
import os
import time

from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine

from lsq_sync.store import db, runs, schema
from lsq_sync.store.models import task_history
from lsq_sync.store.tasks import write_batch
from lsq_sync.store.types import utcnow

from upsert import outcomes, settle

BATCH = 100  # leads per transaction, as a pull writes them


def history_bytes(engine: Engine) -> int:
    name = engine.dialect.name
    with engine.connect() as conn:
        if name == "postgresql":
            return int(conn.execute(text(
                "SELECT pg_total_relation_size('lsq_task_history')")).scalar_one())
        if name in ("mysql", "mariadb"):
            conn.execute(text("ANALYZE TABLE lsq_task_history"))
            return int(conn.execute(text(
                "SELECT data_length + index_length FROM information_schema.tables "
                "WHERE table_schema = DATABASE() AND table_name = 'lsq_task_history'"))
                .scalar_one())
        # SQLite: the pages of the table and its indexes (dbstat may be missing: file size).
        try:
            return int(conn.execute(text(
                "SELECT SUM(pgsize) FROM dbstat WHERE name LIKE '%task_history%'")).scalar_one())
        except Exception:
            return os.path.getsize(str(engine.url.database))


def run(url: str, leads: int, versions: int) -> None:
    engine = db.make_engine(url)
    schema.upgrade(engine)
    run_id = runs.start(engine, "pull")
    rates = []
    for version in range(versions):
        batches = outcomes(leads, version)
        started = time.perf_counter()
        for i in range(0, len(batches), BATCH):
            with engine.begin() as conn:
                write_batch(conn, batches[i:i + BATCH], run_id=run_id, now=utcnow(),
                            history=True)
        rates.append(leads * 5 / (time.perf_counter() - started))
        settle(engine)
    with engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(task_history)).scalar_one()
    size = history_bytes(engine)
    print(f"{engine.dialect.name}: {count} versions, {size / count:.0f} bytes each, "
          f"{size / count * 1e6 / 2**30:.2f} GiB per million versions; "
          f"write rate with history {min(rates):,.0f}-{max(rates):,.0f} tasks/s")
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("urls", nargs="+")
    parser.add_argument("--leads", type=int, default=4000)
    parser.add_argument("--versions", type=int, default=5)
    args = parser.parse_args()
    for url in args.urls:
        run(url, args.leads, args.versions)


if __name__ == "__main__":
    main()
