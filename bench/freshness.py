"""The freshest strategy against passes, with one call budget for every arm.

The simulator (in this process: its state and its true rates are known) changes tasks by
itself, each lead at its own rate spread over two decades (--churn). Each arm starts from
a new SQLite database and one complete pass; then for --seconds it pulls back to back
while this process samples, every 0.5 s, the share of live tasks whose row differs from
the CRM. Arms: "pass" (passes over the leads query), "freshest" (pulls of --calls each),
"hints" (freshest plus `listen` on the simulator's webhooks, --loss of them lost), and
"oracle" (freshest with the simulator's true rates instead of the estimates: the limit of
the policy). Also verify's interval coverage over --coverage seeded samples of one state.
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

from hints import SECRET, Recorder, latency, stale_share, summary
from sqlalchemy import create_engine

from lsq_sync import api, config, logs
from lsq_sync.control import StopReason
from lsq_sync.core import app, freshest
from lsq_sync.listen import service
from lsq_sync.store import db as store_db
from lsq_sync.store import schema
from lsq_sync.testing import Faults, SimConfig, Simulator, WebhookConfig

from common import workdir


def arm(name: str, args: argparse.Namespace) -> dict[str, Any]:
    folder = workdir()
    db_url = f"sqlite:///{folder / 'bench.db'}"
    sim = Simulator(SimConfig(leads=args.leads, seed=args.seed, rate_calls=args.rate,
                              rate_period_s=1.0, churn=args.churn,
                              faults=Faults(latency_ms=(30, 80)))).start()
    recorder = Recorder(sim)
    strategy = "pass" if name == "pass" else "freshest"
    cfg = config.from_mapping({
        "lsq": {**sim.lsq_settings(), "rate_limit_calls": args.rate, "rate_limit_period_s": 1},
        "database": {"url": db_url}, "store": {"history": True},
        "refresh": {"strategy": strategy},
        "listen": {"port": 0, "secret": SECRET},
        "log": {"level": "warning"}}, env={})
    engine = create_engine(store_db.normalize_url(db_url))
    schema.upgrade(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE leads (lead_id VARCHAR(64) PRIMARY KEY)")
        conn.exec_driver_sql("INSERT INTO leads VALUES " + ",".join(
            f"('{lead}')" for lead in sim.state.lead_ids()))
    ctx = app.Context()
    listener = None
    if name == "hints":  # webhooks from the start, as in a real setup
        ready = threading.Event()
        where: list[service.Listening] = []
        listener = threading.Thread(target=service.serve, args=(cfg, ctx), kwargs={
            "on_ready": lambda w: (where.append(w), ready.set())}, daemon=True)
        listener.start()
        ready.wait(15)
        poster = sim.send_webhooks(WebhookConfig(url=where[0].url,
                                                 header=("x-lsq-sync-secret", SECRET),
                                                 loss=args.loss))
        recorder.forward = poster.changed
        sim.state.on_change = recorder.changed
    api.pull(cfg, full=True)
    real_estimate = freshest.estimate
    if name == "oracle":
        freshest.estimate = lambda histories: {  # type: ignore[assignment]
            lead: sim.churn.rate_of(lead) for lead in histories}
    stop = threading.Event()

    def pulls() -> None:
        while not stop.is_set():
            if strategy == "pass":
                api.pull(cfg, full=True, stop=stop)
            else:
                api.pull(cfg, calls=args.calls, stop=stop)

    runner = threading.Thread(target=pulls, daemon=True)
    runner.start()
    # A warm-up: the estimator learns each lead's rate from its own fetches first.
    time.sleep(args.warmup)
    start = time.time()
    first_change = len(recorder.changes)
    calls_before = sim.meter.snapshot()["accepted"]
    samples: list[float] = []
    while time.time() - start < args.seconds:
        samples.append(stale_share(sim, engine))
        time.sleep(0.5)
    stop.set()
    runner.join(60)
    freshest.estimate = real_estimate  # type: ignore[assignment]
    if listener is not None:
        ctx.stop.set(StopReason.SIGNAL)
        listener.join(30)
    sim.churn.stop()
    calls = sim.meter.snapshot()["accepted"] - calls_before
    latencies, missed = latency(engine, recorder.changes[first_change:], start, args.seconds)
    sim.stop()
    return summary(name, samples, latencies, missed, calls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leads", type=int, default=100)
    parser.add_argument("--rate", type=int, default=5, help="calls per second, every arm")
    parser.add_argument("--churn", type=float, default=60.0,
                        help="changes per lead per hour (centre of a two-decade spread)")
    parser.add_argument("--calls", type=int, default=10, help="calls per freshest pull")
    parser.add_argument("--loss", type=float, default=0.05, help="share of webhooks lost")
    parser.add_argument("--seconds", type=float, default=90.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=60.0,
                        help="seconds of pulls before the window (the rates are learnt)")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--arms", nargs="+", default=["pass", "freshest", "hints", "oracle"],
                        choices=["pass", "freshest", "hints", "oracle"])
    args = parser.parse_args()
    if args.leads < 1 or args.rate < 1 or args.calls < 1 or args.seconds <= 10 \
            or args.warmup < 0 or not 0 <= args.loss <= 1:
        parser.error("--leads, --rate and --calls from 1, --seconds above 10, --warmup 0+, "
                     "--loss in 0..1")
    logs.configure("console", "warning")
    results = [arm(name, args) for name in args.arms]
    base = next((r["stale"] for r in results if r["arm"] == "pass"), None)
    for r in results:
        ratio = f"  {r['stale'] / base:.3f} of pass" if base else ""
        print(f"{r['arm']:8s} stale share {r['stale']:.4f}{ratio}  change-to-row p50 "
              f"{r['p50']:.1f} s p95 {r['p95']:.1f} s  ({r['changes']} changes, "
              f"{r['missed']} not arrived, {r['calls']} calls)")


if __name__ == "__main__":
    main()
