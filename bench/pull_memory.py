"""Benchmark 3: peak RSS while pulling from a huge leads table (target < 150 MB, flat).

Fills a `leads` table with N lead ids, runs a pull against a fast simulator for a bounded
time, and reports the pull's peak RSS. Run it for several N to see that RSS is flat.
"""

from __future__ import annotations

import argparse
import time

from sqlalchemy import create_engine, text

from common import SimProcess, lsq, run_cli, workdir, write_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leads", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="stop the pull after this long (0: let it finish)")
    parser.add_argument("--max-tasks", type=int, default=6,
                        help="each lead has 0 to this many tasks (10 gives about 5 per lead)")
    args = parser.parse_args()

    for count in args.leads:
        folder = workdir()
        db_url = f"sqlite:///{folder / 'bench.db'}"
        start = time.monotonic()
        sim = SimProcess("--leads", str(count), "--rate-limit", "0", "--max-tasks",
                         str(args.max_tasks), "--leads-db", db_url)
        filled = time.monotonic() - start
        try:
            config = write_config(folder / "c.toml", sim.url, db_url,
                                  rate_limit_calls=1_000_000, rate_limit_period_s=1,
                                  shared_budget=False)
            run_cli(*lsq(config, "db", "upgrade"))
            code, wall, cpu, rss = run_cli(*lsq(config, "pull"),
                                           timeout=args.seconds or None)
            engine = create_engine(db_url)
            with engine.connect() as conn:
                done = conn.execute(text("SELECT leads_ok FROM lsq_sync_runs")).scalar() or 0
                tasks = conn.execute(text("SELECT COUNT(*) FROM lsq_tasks")).scalar()
            size = sum(p.stat().st_size for p in folder.glob("bench.db*")) / 2**20
        finally:
            sim.stop()
        print(f"leads={count}: table filled in {filled:.0f}s; pull ran {wall:.0f}s "
              f"(exit {code}), {done} leads done ({done / wall:.0f}/s), {tasks} tasks, "
              f"cpu={cpu:.0f}s, peak_rss={rss:.0f}MB, database {size:.0f} MB")


if __name__ == "__main__":
    main()
