"""Soak: one long pull at a scaled-up rate with faults; RSS, open files, throughput.

Samples the pull's RSS and open file descriptors every --every seconds, and its leads/s
from lsq_sync_runs; the simulator reports throttles. Stops the pull after --minutes.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

from sqlalchemy import create_engine, text

from common import SimProcess, lsq, run_cli, workdir, write_config


def sample(pid: int) -> tuple[float, int]:
    with open(f"/proc/{pid}/status") as status:
        rss = next(int(ln.split()[1]) for ln in status if ln.startswith("VmRSS:")) / 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--rate", type=int, default=100, help="calls per second")
    parser.add_argument("--every", type=float, default=30)
    args = parser.parse_args()
    leads = int(args.rate * args.minutes * 60 * 1.2)
    folder = workdir()
    db_url = f"sqlite:///{folder / 'soak.db'}"
    sim = SimProcess("--leads", str(leads), "--rate-limit", f"{args.rate}/1",
                     "--latency", "5-60", "--bare-500", "0.02", "--malformed", "0.01",
                     "--drop", "0.01", "--leads-db", db_url)
    engine = create_engine(db_url)
    try:
        config = write_config(folder / "c.toml", sim.url, db_url, rate_limit_calls=args.rate,
                              rate_limit_period_s=1, retry_backoff_s=0.1)
        run_cli(*lsq(config, "db", "upgrade"))
        proc = subprocess.Popen([sys.executable, "-m", "lsq_sync", *lsq(config, "pull")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        start = time.monotonic()
        last_done, last_t = 0, start
        print("minute  rss_mb  fds  leads_done  leads/s  throttled")
        while time.monotonic() - start < args.minutes * 60 and proc.poll() is None:
            time.sleep(args.every)
            rss, fds = sample(proc.pid)
            with engine.connect() as conn:
                done = conn.execute(text("SELECT leads_ok + leads_failed FROM lsq_sync_runs "
                                         "ORDER BY id DESC LIMIT 1")).scalar() or 0
            now = time.monotonic()
            print(f"{(now - start) / 60:6.1f}  {rss:6.1f}  {fds:3d}  {done:10d}  "
                  f"{(done - last_done) / (now - last_t):7.1f}  {sim.stats()['throttled']:9d}",
                  flush=True)
            last_done, last_t = done, now
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        print(f"stopped with SIGTERM: exit {proc.returncode}; simulator: {sim.stats()}")
    finally:
        sim.stop()


if __name__ == "__main__":
    main()
