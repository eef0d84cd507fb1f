"""Crash consistency (short): sync killed with SIGKILL at random moments loses nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from bench.crash_check import check, crash_loop, settle, write_config
from lsq_sync.testing import Faults, Simulator

from .helpers import fill_leads_table


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11])  # more seeds: bench/crash_loop.py
def test_killed_syncs_lose_and_duplicate_nothing(seed: int, sqlite_url: str,
                                                 make_sim: Callable[..., Simulator],
                                                 tmp_path: Path) -> None:
    from lsq_sync.store import db, schema
    engine: Engine = db.make_engine(sqlite_url)
    schema.upgrade(engine)
    sim = make_sim(leads=60, seed=seed, faults=Faults(latency_ms=(5, 40), bare_500=0.05))
    fill_leads_table(sqlite_url, sim.state.lead_ids())
    config = write_config(tmp_path / "c.toml", sim, sqlite_url)
    report = crash_loop(engine, sim, config, rounds=8, seed=seed)
    assert report.kills >= 3, report  # the loop did kill runs mid-way
    codes = settle(config)
    assert codes[-1] == 0, codes
    summary = check(engine, sim, report)
    assert summary["edits"] == report.edits_queued
