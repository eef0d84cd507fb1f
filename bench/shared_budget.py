"""Benchmark: a pull backfill and a push run at once, sharing one account's limit.

Simulator at 25 calls / 5 s with 200-400 ms latency. A pull over --leads leads and a push
of --edits edits start together as separate processes; reports the simulator's throttle
count, its busiest window and the share of the limit the two used together.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from sqlalchemy import create_engine, text

from common import SimProcess, lsq, run_cli, workdir, write_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leads", type=int, default=150)
    parser.add_argument("--edits", type=int, default=60)
    parser.add_argument("--only", choices=["pull", "push"],
                        help="run that command alone (its pace, with nothing beside it)")
    args = parser.parse_args()
    folder = workdir()
    db_url = f"sqlite:///{folder / 'bench.db'}"
    fast = SimProcess("--leads", str(args.leads), "--rate-limit", "0", "--leads-db", db_url)
    try:  # first fill lsq_tasks quickly, so that the push has tasks to edit
        config = write_config(folder / "fast.toml", fast.url, db_url,
                              rate_limit_calls=1000, rate_limit_period_s=1)
        run_cli(*lsq(config, "db", "upgrade"))
        run_cli(*lsq(config, "pull"))
    finally:
        fast.stop()
    engine = create_engine(db_url)
    with engine.begin() as conn:
        # One task per lead, so that each edit costs a read and an Update.
        ids = conn.execute(text("SELECT MIN(task_id) FROM lsq_tasks GROUP BY lead_id "
                                f"LIMIT {args.edits}")).scalars()
        conn.execute(text("INSERT INTO lsq_task_edits (task_id, name) VALUES (:t, 'bench')"),
                     [{"t": t} for t in ids])
    sim = SimProcess("--leads", str(args.leads), "--rate-limit", "25/5", "--latency", "200-400")
    try:
        config = write_config(folder / "c.toml", sim.url, db_url)
        start = time.monotonic()
        procs = [subprocess.Popen([sys.executable, "-m", "lsq_sync", *lsq(config, cmd)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for cmd in ([args.only] if args.only else ["pull", "push"])]
        codes = [p.wait() for p in procs]
        wall = time.monotonic() - start
        stats = sim.stats()
    finally:
        sim.stop()
    what = {"pull": f"pull of {args.leads} leads", "push": f"push of {args.edits} edits"}
    print(f"{' + '.join(what[c] for c in ([args.only] if args.only else what))}: "
          f"exit {codes}, {wall:.1f}s")
    print(f"accepted={stats['accepted']} throttled={stats['throttled']} "
          f"busiest_window={stats['busiest_window']} (limit 25)")
    print(f"used share of the limit = {5.0 / stats['mean_gap_s']:.3f} (target >= 0.90)")


if __name__ == "__main__":
    main()
