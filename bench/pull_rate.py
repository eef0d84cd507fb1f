"""Benchmark 1: does a pull use the whole rate limit without being throttled?

Simulator at 25 calls / 5 s with 200-400 ms latency; lsq-sync configured the same.
Reports the steady-state rate (calls after the first window / their span) divided by the
limit, the simulator's throttle count and its busiest window.
"""

from __future__ import annotations

import argparse

from common import SimProcess, lsq, run_cli, workdir, write_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leads", type=int, default=200)
    parser.add_argument("--calls", type=int, default=25)
    parser.add_argument("--period", type=float, default=5.0)
    parser.add_argument("--latency", default="200-400")
    args = parser.parse_args()

    folder = workdir()
    db_url = f"sqlite:///{folder / 'bench.db'}"
    sim = SimProcess("--leads", str(args.leads), "--rate-limit", f"{args.calls}/{args.period:g}",
                     "--latency", args.latency, "--leads-db", db_url)
    try:
        config = write_config(folder / "c.toml", sim.url, db_url, rate_limit_calls=args.calls,
                              rate_limit_period_s=args.period)
        run_cli(*lsq(config, "db", "upgrade"))
        code, wall, cpu, rss = run_cli(*lsq(config, "pull"))
        stats = sim.stats()
    finally:
        sim.stop()
    limit_rate = args.calls / args.period
    # Each call waited for the call `calls` before it to leave the window, and no longer?
    steady = args.period / stats["mean_gap_s"]
    print(f"leads={args.leads} limit={args.calls}/{args.period:g}s latency={args.latency}ms")
    print(f"exit={code} wall={wall:.1f}s cpu={cpu:.2f}s peak_rss={rss:.0f}MB")
    print(f"accepted={stats['accepted']} throttled={stats['throttled']} "
          f"busiest_window={stats['busiest_window']} (limit {args.calls})")
    print(f"used share of the limit = {steady:.3f}  (period / mean gap between call i and "
          f"call i-{args.calls}; target >= 0.97)")
    print(f"whole-run calls/s / limit = {stats['accepted'] / wall / limit_rate:.3f}")


if __name__ == "__main__":
    main()
