"""Benchmark (issue 14): does a run keep the ideal pace at the real limit, default config?

Simulator at 25 calls / 5 s with 200-400 ms latency, in its own process; lsq-sync with
its default configuration (only the host and keys set). For a short cron-sized pull it
reports the ideal span over the actual span of the task requests as the simulator saw
them arrive (a perfect client sends N calls in (ceil(N/25) - 1) * 5 s), with throttles
answered as 429 and as 200; with --long, the share of the limit a long pull uses
(period / mean gap between call i and call i-25). `shared_budget.py` measures a pull
beside a push.
"""

from __future__ import annotations

import argparse
import math

from common import SimProcess, lsq, run_cli, workdir, write_config


def pull(leads: int, throttle_status: str, latency: str) -> dict[str, float]:
    folder = workdir()
    db_url = f"sqlite:///{folder / 'bench.db'}"
    sim = SimProcess("--leads", str(leads), "--rate-limit", "25/5", "--latency", latency,
                     "--throttle-status", throttle_status, "--leads-db", db_url)
    try:
        config = write_config(folder / "c.toml", sim.url, db_url)  # defaults otherwise
        run_cli(*lsq(config, "db", "upgrade"))
        code, wall, cpu, _ = run_cli(*lsq(config, "pull"))
        stats = sim.stats()
    finally:
        sim.stop()
    ideal = (math.ceil(stats["accepted"] / 25) - 1) * 5.0
    return {"exit": code, "wall": wall, "cpu": cpu, "accepted": stats["accepted"],
            "throttled": stats["throttled"], "busiest": stats["busiest_window"],
            "span": stats["span_s"], "ideal": ideal,
            "used": 5.0 / stats["mean_gap_s"] if stats["mean_gap_s"] else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leads", type=int, default=150)
    parser.add_argument("--latency", default="200-400")
    parser.add_argument("--long", type=int, default=0, metavar="LEADS",
                        help="also a long pull of this many leads (2000: about 7 minutes)")
    args = parser.parse_args()
    for status in ("429", "200"):
        r = pull(args.leads, status, args.latency)
        ratio = f"{r['ideal'] / r['span']:.3f}" if r["ideal"] and r["span"] else "n/a"
        print(f"{args.leads} leads, throttles as {status}: span {r['span']:.2f}s, ideal "
              f"{r['ideal']:.1f}s, ideal/actual {ratio}; "
              f"throttled {r['throttled']}, busiest window {r['busiest']}/25, exit "
              f"{r['exit']}, cpu {r['cpu']:.2f}s")
    if args.long:
        r = pull(args.long, "429", args.latency)
        print(f"{args.long} leads: used share of the limit {r['used']:.4f}, span "
              f"{r['span']:.1f}s (ideal {r['ideal']:.0f}s), throttled {r['throttled']}")


if __name__ == "__main__":
    main()
