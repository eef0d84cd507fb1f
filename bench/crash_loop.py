"""The long crash-consistency loop: many SIGKILLed syncs, then a full consistency check.

Runs in-process against a simulator whose data changes between rounds, with edits queued
by plain SQL; see bench/crash_check.py for what is checked.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crash_check import check, crash_loop, settle, write_config

from lsq_sync.cli.demo import fill_leads_table
from lsq_sync.store import db, schema
from lsq_sync.testing import Faults, SimConfig, Simulator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--leads", type=int, default=120)
    args = parser.parse_args()
    for seed in args.seeds:
        folder = Path(tempfile.mkdtemp(prefix="lsq-crash-"))
        url = f"sqlite:///{folder / 'crash.db'}"
        engine = db.make_engine(url)
        schema.upgrade(engine)
        start = time.monotonic()
        with Simulator(SimConfig(leads=args.leads, seed=seed, rate_calls=0,
                                 faults=Faults(latency_ms=(5, 50), bare_500=0.05,
                                               malformed=0.02))) as sim:
            fill_leads_table(url, sim.state.lead_ids())
            config = write_config(folder / "c.toml", sim, url)
            report = crash_loop(engine, sim, config, rounds=args.rounds, seed=seed,
                                max_kill_s=4.0)
            codes = settle(config)
            summary = check(engine, sim, report)
        print(f"seed {seed}: {args.rounds} rounds, {report.kills} killed, exits "
              f"{sorted(set(report.exits))}, {report.crm_changes} CRM changes, "
              f"{report.edits_queued} edits queued; settled with {codes}; consistent: "
              f"{summary}; {time.monotonic() - start:.0f}s")


if __name__ == "__main__":
    main()
