"""lsq-sync beside a peer (dlt's rest_api), on the same simulator with no rate limit.

For each arm: a first pull of --leads leads into a new SQLite file (wall: the median of
--repeats; CPU per lead: the marginal cost over a pull with no leads) and a pull with no
leads (CPU and peak RSS). The arms: dlt (bench/peer_dlt.py, run by --dlt-python; left out
without it), lsq-sync's default configuration (the limit raised out of the way, as an
account without one would set it), and the same with [lsq].shared_budget = false.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from lsq_sync.testing import DEMO_ACCESS_KEY, DEMO_SECRET_KEY

from common import SimProcess, lsq, run_cmd, workdir, write_config

HERE = Path(__file__).resolve().parent


def one(arm: str, leads: int, folder: Path, dlt_python: str, python: str
        ) -> tuple[float, float, float]:
    """(wall, CPU, peak RSS MB) of one pull of `leads` leads into a new database."""
    db_url = f"sqlite:///{folder / f'{arm}-{leads}-{len(list(folder.iterdir()))}.db'}"
    sim = SimProcess("--leads", str(leads), "--rate-limit", "0", "--leads-db", db_url)
    try:
        if arm == "dlt":
            argv = [dlt_python, str(HERE / "peer_dlt.py"), "--url", sim.url, "--db", db_url,
                    "--access-key", DEMO_ACCESS_KEY, "--secret-key", DEMO_SECRET_KEY]
            code, wall, cpu, rss = run_cmd(argv)
        else:
            config = write_config(folder / f"{arm}.toml", sim.url, db_url,
                                  rate_limit_calls=1_000_000, rate_limit_period_s=1,
                                  **({"shared_budget": False} if arm == "shared off" else {}))
            run_cmd([python, "-m", "lsq_sync", *lsq(config, "db", "upgrade")])
            code, wall, cpu, rss = run_cmd([python, "-m", "lsq_sync", *lsq(config, "pull")])
        if code != 0:
            raise SystemExit(f"{arm}: exit {code} on {leads} leads")
        return wall, cpu, rss
    finally:
        sim.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leads", type=int, default=2_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dlt-python", default="",
                        help="a Python with dlt[sqlalchemy] installed (the dlt arm)")
    parser.add_argument("--python", default=sys.executable,
                        help="the Python whose lsq-sync the lsq-sync arms run (default: this "
                             "one), to compare two versions in one sitting")
    parser.add_argument("--arms", nargs="+", default=["dlt", "default", "shared off"],
                        choices=["dlt", "default", "shared off"])
    args = parser.parse_args()
    if args.leads < 1 or args.repeats < 1:
        parser.error("--leads and --repeats must be 1 or more")
    arms = [a for a in args.arms if a != "dlt" or args.dlt_python]
    folder = workdir()
    print(f"| figure | {' | '.join(arms)} |")
    print(f"|---|{'---|' * len(arms)}")
    walls, per_lead, empty = [], [], []
    for arm in arms:
        runs = [one(arm, args.leads, folder, args.dlt_python, args.python)
                for _ in range(args.repeats)]
        idle = [one(arm, 0, folder, args.dlt_python, args.python) for _ in range(args.repeats)]
        idle_cpu = statistics.median(c for _, c, _ in idle)
        walls.append(f"{statistics.median(w for w, _, _ in runs):.2f} s")
        marginal = (statistics.median(c for _, c, _ in runs) - idle_cpu) / args.leads
        per_lead.append(f"{marginal * 1000:.2f} ms")
        empty.append(f"{idle_cpu:.2f} s / {statistics.median(r for _, _, r in idle):.0f} MB")
        print(f"# {arm}: walls {[round(w, 2) for w, _, _ in runs]}, "
              f"CPU {[round(c, 2) for _, c, _ in runs]}", file=sys.stderr)
    print(f"| {args.leads:,} leads, no rate limit: wall (median of {args.repeats}) | "
          f"{' | '.join(walls)} |")
    print(f"| CPU per lead, marginal | {' | '.join(per_lead)} |")
    print(f"| a pull with no leads: CPU / peak RSS | {' | '.join(empty)} |")


if __name__ == "__main__":
    main()
