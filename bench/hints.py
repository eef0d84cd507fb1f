"""Webhook hints against passes alone: change-to-row latency and the stale share of tasks,
with one call budget for both arms.

The simulator (in this process: its state is the truth) changes tasks by itself (--churn),
its rate limit is the one budget. Arm "pass": `lsq-sync pull` back to back. Arm "hints":
the same passes, plus `lsq-sync listen` pulling the leads the simulator's webhooks name
(--loss of them lost), sharing the budget through [lsq].shared_budget. Each arm starts
from a complete first pass; then for --seconds this process samples, every 0.5 s, the
share of live tasks whose row differs from the CRM (missing, deleted, other name, status
or description), and afterwards reads each churn change's arrival from lsq_task_history.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select

from lsq_sync.config import to_toml
from lsq_sync.store.models import task_history, tasks
from lsq_sync.testing import Faults, SimConfig, Simulator, WebhookConfig

from common import workdir

SECRET = "bench-secret-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def lsq(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "lsq_sync", "--config", str(config), *args]


class Recorder:
    """Every task change the simulator makes, with its wall time (and passes it on)."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.changes: list[tuple[float, str, str, str | None]] = []
        self.forward: Any = None
        sim.state.on_change = self.changed

    def changed(self, event: int | None, lead_id: str, task_id: str) -> None:
        task = self.sim.state._locate(task_id)  # under the state's lock already
        description = task[1].get("Description") if task else None
        self.changes.append((time.time(), lead_id, task_id, description))
        if self.forward is not None:
            self.forward(event, lead_id, task_id)


def stale_share(sim: Simulator, engine: Any) -> float:
    truth = sim.state.all_tasks()
    with engine.connect() as conn:
        rows = {r.task_id: r for r in conn.execute(select(
            tasks.c.task_id, tasks.c.lead_id, tasks.c.name, tasks.c.status,
            tasks.c.description, tasks.c.deleted_at))}
    stale = 0
    for task_id, task in truth.items():
        row = rows.get(task_id)
        if row is None or row.deleted_at is not None or row.lead_id != task["_lead"] or (
                row.name, row.status, row.description) != (
                task.get("Name"), task.get("Status"), task.get("Description")):
            stale += 1
    return stale / max(1, len(truth))


def arm(name: str, args: argparse.Namespace) -> dict[str, Any]:
    folder = workdir()
    db_url = f"sqlite:///{folder / 'bench.db'}"
    sim = Simulator(SimConfig(leads=args.leads, seed=args.seed, rate_calls=args.rate,
                              rate_period_s=1.0, churn=args.churn,
                              faults=Faults(latency_ms=(50, 150)))).start()
    recorder = Recorder(sim)
    port = free_port()
    config = folder / "c.toml"
    config.write_text(to_toml({
        "lsq": {**sim.lsq_settings(), "rate_limit_calls": args.rate, "rate_limit_period_s": 1},
        "database": {"url": db_url}, "store": {"history": True},
        "listen": {"port": port, "secret": SECRET, "pull": True},
        "log": {"format": "json", "level": "warning"}}))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    subprocess.run(lsq(config, "db", "upgrade"), check=True, **quiet)  # type: ignore[call-overload]
    from lsq_sync.store import db as store_db
    engine = create_engine(store_db.normalize_url(db_url))
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE leads (lead_id VARCHAR(64) PRIMARY KEY)")
        conn.exec_driver_sql("INSERT INTO leads VALUES " + ",".join(
            f"('{lead}')" for lead in sim.state.lead_ids()))
    listener = None
    if name in ("hints", "listen"):
        listener = subprocess.Popen(lsq(config, "listen"), **quiet)  # type: ignore[call-overload]
        time.sleep(2.0)
        poster = sim.send_webhooks(WebhookConfig(
            url=f"http://127.0.0.1:{port}/lsq/webhook", header=("x-lsq-sync-secret", SECRET),
            loss=args.loss))
        recorder.forward = poster.changed
        sim.state.on_change = recorder.changed
    # The first pass, with webhooks on already in the hints arms: the window starts with
    # every lead fetched once.
    subprocess.run(lsq(config, "pull"), check=False, **quiet)  # type: ignore[call-overload]
    start = time.time()
    first_change = len(recorder.changes)
    calls_before = sim.meter.snapshot()["accepted"]
    stop = threading.Event()

    def passes() -> None:
        while not stop.is_set():
            proc = subprocess.Popen(lsq(config, "pull"), **quiet)  # type: ignore[call-overload]
            while proc.poll() is None:
                if stop.wait(0.2):
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(30)
                    return

    runner = threading.Thread(target=passes, daemon=True)
    if name != "listen":  # "listen": hints alone, the budget all theirs
        runner.start()
    samples: list[float] = []
    while time.time() - start < args.seconds:
        samples.append(stale_share(sim, engine))
        time.sleep(0.5)
    stop.set()
    if runner.is_alive():
        runner.join(60)
    if listener is not None:
        listener.send_signal(signal.SIGTERM)
        listener.wait(30)
    sim.churn.stop()
    snapshot = sim.meter.snapshot()
    calls, throttled = snapshot["accepted"] - calls_before, snapshot["throttled"]
    latencies, missed = latency(engine, recorder.changes[first_change:], start, args.seconds)
    sim.stop()
    return {**summary(name, samples, latencies, missed, calls), "throttled": throttled}


def summary(name: str, samples: list[float], latencies: list[float], missed: int,
            calls: int) -> dict[str, Any]:
    """An arm's figures: mean stale share, change-to-row p50/p95, changes, calls."""
    q = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else [float("nan")] * 19
    return {"arm": name, "stale": statistics.fmean(samples), "p50": q[9], "p95": q[18],
            "changes": len(latencies) + missed, "missed": missed, "calls": calls}


def latency(engine: Any, changes: list[tuple[float, str, str, str | None]], start: float,
            seconds: float) -> tuple[list[float], int]:
    """Seconds from each description change in the window to the first version that
    holds it; a change overwritten before any fetch saw it is not counted; one that never
    arrived counts as `missed`."""
    with engine.connect() as conn:
        versions = list(conn.execute(select(task_history.c.task_id, task_history.c.description,
                                            task_history.c.valid_from)))
    first: dict[tuple[str, str | None], float] = {}
    for v in versions:
        key = (v.task_id, v.description)
        at = v.valid_from.timestamp()
        first[key] = min(first.get(key, at), at)
    final: dict[str, str | None] = {}
    for _t, _lead, task_id, description in changes:
        final[task_id] = description
    result, missed = [], 0
    for t, _lead, task_id, description in changes:
        if t > start + seconds - 10:  # the last seconds have no time to arrive
            continue
        arrived = first.get((task_id, description))
        if arrived is not None and arrived >= t - 0.001:
            result.append(max(0.0, arrived - t))
        elif final.get(task_id) == description:
            missed += 1
    return result, missed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leads", type=int, default=300)
    parser.add_argument("--rate", type=int, default=10, help="calls per second, both arms")
    parser.add_argument("--churn", type=float, default=24.0,
                        help="changes per lead per hour (centre of a two-decade spread)")
    parser.add_argument("--loss", type=float, default=0.05, help="share of webhooks lost")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--arms", nargs="+", default=["pass", "hints"],
                        choices=["pass", "hints", "listen"])
    args = parser.parse_args()
    if args.leads < 1 or args.rate < 1 or args.seconds <= 10 or not 0 <= args.loss <= 1:
        parser.error("--leads and --rate from 1, --seconds above 10, --loss in 0..1")
    results = [arm(name, args) for name in args.arms]
    for r in results:
        print(f"{r['arm']:6s} stale share {r['stale']:.4f}  change-to-row p50 {r['p50']:.2f} s "
              f"p95 {r['p95']:.2f} s  ({r['changes']} changes, {r['missed']} not arrived, "
              f"{r['calls']} calls in the window, {r['throttled']} throttled)")
    if len(results) == 2 and results[0]["stale"]:
        print(f"hints / pass stale share: {results[1]['stale'] / results[0]['stale']:.3f}")


if __name__ == "__main__":
    main()
