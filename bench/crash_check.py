"""The crash-consistency check: kill runs at random, then verify the database (tests, bench)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.engine import Engine

from lsq_sync.config import to_toml
from lsq_sync.states import RunStatus
from lsq_sync.store.models import sync_runs, task_edits, tasks
from lsq_sync.testing import Simulator


@dataclass
class Report:
    kills: int = 0
    exits: list[int] = field(default_factory=list)
    edits_queued: int = 0
    crm_changes: int = 0


def write_config(path: Path, sim: Simulator, db_url: str) -> Path:
    path.write_text(to_toml({
        "lsq": sim.lsq_settings(rate_limit_calls=40, rate_limit_period_s=1,
                                retry_backoff_s=0.05, concurrency=4, timeout_s=2),
        "database": {"url": db_url}, "log": {"format": "json", "level": "warning"}}))
    return path


def sync(config: Path, kill_after: float | None) -> int | None:
    """Run `lsq-sync sync`; SIGKILL it after `kill_after` seconds. None if it was killed."""
    proc = subprocess.Popen([sys.executable, "-m", "lsq_sync", "--config", str(config), "sync"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "LSQ_ACCESS_KEY": "", "LSQ_SECRET_KEY": ""})
    try:
        proc.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        return None
    finally:
        assert proc.stderr is not None
        err = proc.stderr.read()
    assert "Traceback" not in err, err
    return proc.returncode


def change_crm(sim: Simulator, rng: random.Random, protected: set[str]) -> int:
    """Delete, restore, move, rename and add tasks the edits do not target."""
    state = sim.state
    lead_ids = list(state.lead_ids())
    changes = 0
    for _ in range(rng.randint(1, 6)):
        lead = rng.choice(lead_ids)
        own = [t["TaskID"] for t in state.tasks_of(lead) if t["TaskID"] not in protected]
        action = rng.choice(["delete", "move", "rename", "add", "restore"])
        if action == "restore" and state._graveyard:
            state.restore_task(rng.choice(sorted(state._graveyard)))
        elif action == "add":
            n = 1000 + changes + rng.randrange(10**6)
            task = {**(state.tasks_of(lead)[:1] or [{}])[0]}
            task.update({"TaskID": f"{n:08x}-aaaa-4000-9000-{sim.cfg.seed:012x}",
                         "Name": "Added in the CRM", "Reminder": "5", "Status": "Pending",
                         "DueDate": "2027-01-01 00:00:00", "CreatedOn": "2026-01-01 00:00:00"})
            for key in ("Description", "OwnerID", "OwnerName", "CreatedBy", "CreatedByName"):
                task.setdefault(key, None)
            state.add_task(lead, task)
        elif own and action == "delete":
            state.delete_task(rng.choice(own))
        elif own and action == "move":
            state.move_task(rng.choice(own), rng.choice(lead_ids))
        elif own and action == "rename":
            state.change_task(rng.choice(own), Name=f"Renamed {rng.randrange(10**6)}")
        else:
            continue
        changes += 1
    return changes


def queue_edits(engine: Engine, rng: random.Random, targets: list[str], round_: int) -> int:
    rows = [{"t": rng.choice(targets), "n": f"Edit {round_}.{i}"}
            for i in range(rng.randint(0, 4))]
    if rows:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO lsq_task_edits (task_id, name) VALUES (:t, :n)"),
                         rows)
    return len(rows)


def crash_loop(engine: Engine, sim: Simulator, config: Path, *, rounds: int, seed: int,
               max_kill_s: float = 2.5) -> Report:
    rng = random.Random(seed)
    report = Report()
    first = sync(config, None)  # a clean start, so that there are tasks to edit
    assert first == 0, first
    with engine.connect() as conn:
        targets = sorted(conn.execute(select(tasks.c.task_id)).scalars())[:15]
    protected = set(targets)
    for round_ in range(rounds):
        report.crm_changes += change_crm(sim, rng, protected)
        report.edits_queued += queue_edits(engine, rng, targets, round_)
        code = sync(config, rng.uniform(0.05, max_kill_s))
        if code is None:
            report.kills += 1
        else:
            report.exits.append(code)
    return report


def settle(config: Path) -> list[int | None]:
    """Clean runs until one finished everything, then one more full pass."""
    codes = []
    for _ in range(5):
        codes.append(sync(config, None))
        if codes[-1] in (0, 1):
            break
    codes.append(sync(config, None))
    return codes


def check(engine: Engine, sim: Simulator, report: Report) -> dict[str, Any]:
    """Everything the crash loop must leave true; raises AssertionError otherwise."""
    expected = sim.state.all_tasks()
    with engine.connect() as conn:
        rows = {r.task_id: r for r in conn.execute(select(tasks))}
        edits = list(conn.execute(select(task_edits).order_by(task_edits.c.id)))
        running = conn.execute(select(sync_runs.c.id).where(sync_runs.c.status == RunStatus.RUNNING)
                               ).scalars().all()
        claims = conn.execute(text("SELECT COUNT(*) FROM lsq_edit_claims")).scalar_one()
        integrity = (conn.execute(text("PRAGMA integrity_check")).scalar_one()
                     if engine.dialect.name == "sqlite" else "ok")
    live = {tid for tid, r in rows.items() if r.deleted_at is None}
    assert live == set(expected), (live ^ set(expected))
    for task_id, task in expected.items():
        row = rows[task_id]
        assert (row.lead_id, row.name) == (task["_lead"], task["Name"]), task_id
    gone = set(rows) - set(expected)
    assert all(rows[t].deleted_at is not None for t in gone)
    assert len(edits) == report.edits_queued + 0  # none lost
    assert {e.status for e in edits} <= {"sent"}, [(e.id, e.status, e.last_error)
                                                     for e in edits if e.status != "sent"]
    last_name: dict[str, str] = {}
    for e in edits:
        last_name[e.task_id] = e.name
    for task_id, name in last_name.items():  # the last edit of each task is what stands
        assert expected[task_id]["Name"] == name, (task_id, expected[task_id]["Name"], name)
    assert running == [] and claims == 0 and integrity == "ok"
    # Duplicated nothing: a task got at most one Update per edit queued for it (a resend
    # after a kill finds its values in the CRM and makes no call), and only edited tasks.
    queued: dict[str, int] = {}
    for e in edits:
        queued[e.task_id] = queued.get(e.task_id, 0) + 1
    sent = sim.state.update_calls
    assert set(sent) <= set(queued), set(sent) - set(queued)
    assert all(calls <= queued[task_id] for task_id, calls in sent.items()), (sent, queued)
    return {"tasks": len(expected), "deleted": len(gone), "edits": len(edits),
            "update_calls": sum(sim.state.update_calls.values())}
