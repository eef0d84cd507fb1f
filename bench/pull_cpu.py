"""Benchmark 2: CPU per lead with the rate uncapped and no latency (target <= 1 ms).

An uncapped single process has no budget to share: [lsq].shared_budget is off unless
--shared is given (it takes its slots in blocks: about 0.2 ms per call here).

The simulator runs in its own process; only lsq-sync's own CPU time is counted.
"""

from __future__ import annotations

import argparse

from common import SimProcess, lsq, run_cli, workdir, write_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leads", type=int, default=20_000,
                        help="leads in the simulated account (0: a pull with nothing to do)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--db", default="", help="database URL (default: a new SQLite file)")
    parser.add_argument("--shared", action="store_true",
                        help="keep [lsq].shared_budget on (the default configuration)")
    args = parser.parse_args()
    if args.leads < 0 or args.concurrency < 1:
        parser.error("--leads must be 0 or more and --concurrency 1 or more")

    folder = workdir()
    db_url = args.db or f"sqlite:///{folder / 'bench.db'}"
    sim = SimProcess("--leads", str(args.leads), "--rate-limit", "0", "--leads-db", db_url)
    try:
        config = write_config(folder / "c.toml", sim.url, db_url, rate_limit_calls=1_000_000,
                              rate_limit_period_s=1, concurrency=args.concurrency,
                              shared_budget=args.shared)
        run_cli(*lsq(config, "db", "upgrade"))
        for label in ("first pull (all inserts)", "second pull (nothing changed)"):
            code, wall, cpu, rss = run_cli(*lsq(config, "pull"))
            per_lead = f"{cpu / args.leads * 1000:.3f}ms" if args.leads else "n/a"
            print(f"{label}: exit={code} leads={args.leads} wall={wall:.2f}s "
                  f"leads/s={args.leads / wall:.0f} cpu={cpu:.2f}s "
                  f"cpu/lead={per_lead} peak_rss={rss:.0f}MB")
    finally:
        sim.stop()


if __name__ == "__main__":
    main()
