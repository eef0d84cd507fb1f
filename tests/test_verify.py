"""verify over the simulator: the estimate equals the truth when every lead is sampled; it
compares before it writes; status, metrics and --max-stale carry it. And the freshest
strategy's choices, end to end."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import insert, select

from lsq_sync import api, config
from lsq_sync.cli import cli
from lsq_sync.store import db, schema
from lsq_sync.store.models import lead_state, sync_runs, tasks
from lsq_sync.store.types import utcnow
from lsq_sync.testing import Simulator
from tests.helpers import fill_leads_table, settings_for


def setup(sim: Simulator, url: str, tmp_path: Path, **refresh: Any) -> tuple[config.Config,
                                                                          Path]:
    engine = db.make_engine(url)
    schema.upgrade(engine)
    engine.dispose()
    fill_leads_table(url, sim.state.lead_ids())
    settings = settings_for(sim, url)
    if refresh:
        settings["refresh"] = refresh
    settings["log"] = {"format": "json"}
    path = tmp_path / "c.toml"
    path.write_text(config.to_toml(settings))
    return config.from_mapping(settings, env={}), path


def truth(sim: Simulator, url: str) -> tuple[int, int]:
    """(stale tasks, tasks) by a direct comparison of the simulator and lsq_tasks."""
    engine = db.make_engine(url)
    with engine.connect() as conn:
        rows = {r.task_id: r for r in conn.execute(select(tasks))}
    engine.dispose()
    live_here = {tid for tid, r in rows.items() if r.deleted_at is None}
    there = sim.state.all_tasks()
    stale = 0
    for task_id, task in there.items():
        row = rows.get(task_id)
        if row is None or row.deleted_at is not None or row.name != task.get("Name") or \
                row.description != task.get("Description") or row.status != task.get("Status"):
            stale += 1
    stale += len(live_here - set(there))
    return stale, len(set(there) | live_here)


def change_some(sim: Simulator) -> None:
    leads = [lead for lead in sim.state.lead_ids() if sim.state.tasks_of(lead)]
    sim.state.change_task(sim.state.tasks_of(leads[0])[0]["TaskID"], Name="Renamed")
    sim.state.delete_task(sim.state.tasks_of(leads[1])[0]["TaskID"])
    sim.state.add_task(leads[2], {"TaskID": "0000000f-cccc-4000-9000-000000000001",
                                  "Name": "New", "Status": "Pending"})
    sim.state.change_task(sim.state.tasks_of(leads[3])[0]["TaskID"], Status="Completed")


def test_every_lead_sampled_gives_the_true_share_and_then_the_mirror_is_fresh(
        sim: Simulator, db_url: str, tmp_path: Path) -> None:
    cfg, path = setup(sim, db_url, tmp_path)
    api.pull(cfg)
    change_some(sim)
    stale, total = truth(sim, db_url)
    assert stale == 4
    result = api.verify(cfg, sample=10_000, seed=1)
    drift = result.drift
    assert drift is not None and result.status == "succeeded"
    assert (drift["sampled"], drift["population"]) == (40, 40)
    assert (drift["stale_tasks"], drift["tasks"]) == (stale, total)
    assert drift["stale_share"] == drift["stale_low"] == drift["stale_high"] == stale / total
    assert (drift["missing"], drift["deleted"], drift["differing"]) == (1, 1, 2)
    assert drift["fields"] == {"name": 1, "status": 1}
    assert drift["stale_leads"] == 4 and drift["lead_share"] == 4 / 40
    assert truth(sim, db_url)[0] == 0  # then it wrote what it fetched
    again = api.verify(cfg, sample=10_000)
    assert again.drift is not None and again.drift["stale_tasks"] == 0

    shown = CliRunner().invoke(cli, ["--config", str(path), "status", "--json"])
    last = json.loads(shown.output)["verify"]
    assert last["run_id"] == again.run_id and last["stale_high"] == 0.0


def test_a_sample_draws_distinct_leads_and_max_stale_alerts(
        sim: Simulator, sqlite_url: str, tmp_path: Path) -> None:
    cfg, path = setup(sim, sqlite_url, tmp_path)
    api.pull(cfg)
    change_some(sim)
    runner = CliRunner()
    sampled = runner.invoke(cli, ["--config", str(path), "verify", "--sample", "10",
                                  "--seed", "3", "--json"])
    assert sampled.exit_code == 0, sampled.output
    found = json.loads(sampled.output.splitlines()[-1])
    assert (found["sampled"], found["population"]) == (10, 40)
    assert found["stale_low"] <= found["stale_share"] <= found["stale_high"]
    change_some(sim)
    alert = runner.invoke(cli, ["--config", str(path), "verify", "--sample", "40",
                                "--max-stale", "0.001"])
    assert alert.exit_code == 1 and "over --max-stale 0.10%" in alert.output
    quiet = runner.invoke(cli, ["--config", str(path), "verify", "--sample", "40",
                                "--max-stale", "0.5"])
    assert quiet.exit_code == 0
    bad = runner.invoke(cli, ["--config", str(path), "verify", "--max-stale", "2"])
    assert bad.exit_code == 2


def test_freshest_fetches_never_fetched_leads_first_then_the_overdue_then_the_changing(
        sim: Simulator, sqlite_url: str, tmp_path: Path) -> None:
    cfg, _path = setup(sim, sqlite_url, tmp_path, strategy="freshest", max_interval="1h")
    lead_ids = list(sim.state.lead_ids())
    first = api.pull(cfg, calls=10)
    engine = db.make_engine(sqlite_url)
    with engine.connect() as conn:
        fetched = set(conn.execute(select(lead_state.c.lead_id)).scalars())
    assert first.counts.api_calls == 10 and len(fetched) == 10
    second = api.pull(cfg, calls=30)
    with engine.connect() as conn:
        rows = {r.lead_id: r for r in conn.execute(select(lead_state))}
    assert second.counts.api_calls == 30 and set(rows) == set(lead_ids)
    assert all(rows[lead].fetches == 1 for lead in lead_ids)  # the new ones, not again
    # A record: "hot" changed at every fetch, "cold" never; "old" waited past max_interval.
    now = utcnow()
    hot, cold, old = lead_ids[0], lead_ids[1], lead_ids[2]
    with engine.begin() as conn:
        conn.execute(lead_state.delete())
        conn.execute(insert(lead_state), [
            {"lead_id": lead, "fetched_at": now - timedelta(minutes=5), "fetches": 20,
             "changes": 0, "quiet_s": 19 * 300.0, "tasks": 1} for lead in lead_ids[3:]] + [
            {"lead_id": hot, "fetched_at": now - timedelta(minutes=5), "fetches": 20,
             "changes": 19, "quiet_s": 0.0, "change_gaps": json.dumps([300.0] * 19),
             "tasks": 1},
            {"lead_id": cold, "fetched_at": now - timedelta(minutes=5), "fetches": 20,
             "changes": 0, "quiet_s": 19 * 300.0, "tasks": 1},
            {"lead_id": old, "fetched_at": now - timedelta(hours=2), "fetches": 20,
             "changes": 0, "quiet_s": 19 * 300.0, "tasks": 1}])
    third = api.pull(cfg, calls=2)
    with engine.connect() as conn:
        again = set(conn.execute(select(lead_state.c.lead_id).where(
            lead_state.c.fetches == 21)).scalars())
        run = conn.execute(select(sync_runs).where(sync_runs.c.id == third.run_id)).one()
    assert again == {old, hot}  # the overdue one, then the one whose changes wait
    assert run.pass_started_at is None  # no pass: :last_success does not move
    engine.dispose()


@pytest.mark.slow
def test_freshest_calls_follow_the_changes(sim: Simulator, sqlite_url: str,
                                           tmp_path: Path) -> None:
    """Ten leads change before every pull, thirty never do. A pass would give the ten a
    quarter of the calls; once each lead's record says which is which, freshest gives
    them half as many again, and more as the records grow."""
    cfg, _path = setup(sim, sqlite_url, tmp_path, strategy="freshest")
    api.pull(cfg)  # every lead once (never fetched: all first)
    leads_with_tasks = [lead for lead in sim.state.lead_ids() if sim.state.tasks_of(lead)]
    hot = set(leads_with_tasks[:10])
    engine = db.make_engine(sqlite_url)

    def fetches() -> dict[str, int]:
        with engine.connect() as conn:
            return {r.lead_id: r.fetches for r in conn.execute(select(lead_state))}

    for round_ in range(24):
        if round_ == 12:
            learnt = fetches()
        for lead in sorted(hot):
            task_id = sim.state.tasks_of(lead)[0]["TaskID"]
            sim.state.change_task(task_id, Description=f"round {round_}")
        assert api.pull(cfg, calls=10).counts.api_calls == 10
    final = fetches()
    engine.dispose()
    on_hot = sum(final[lead] - learnt[lead] for lead in hot)
    on_cold = sum(n - learnt[lead] for lead, n in final.items() if lead not in hot)
    assert on_hot + on_cold == 120
    assert on_hot >= 45, (on_hot, on_cold)  # a pass: 30
