"""What tests share besides fixtures: configs for a simulator, a leads table, checks of
lsq_tasks against the simulator, and the CLI's last words. Tests import these from here,
never from conftest or from each other."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import Column, MetaData, String, Table, delete, insert, select, text
from sqlalchemy.engine import Engine, make_url

from lsq_sync import config
from lsq_sync.leadsquared.tasks import parse_date
from lsq_sync.store import db
from lsq_sync.store.models import tasks
from lsq_sync.testing import Simulator


def fill_leads_table(url: str, lead_ids: Iterable[str], table: str = "leads") -> int:
    """Create (or empty) a one-column table of lead ids, as a CRM export would be."""
    meta = MetaData()
    leads = Table(table, meta, Column("lead_id", String(64), primary_key=True))
    engine = db.make_engine(url)
    rows_ = [{"lead_id": lead_id} for lead_id in lead_ids]
    with engine.begin() as conn:
        meta.create_all(conn)
        conn.execute(delete(leads))
        if rows_:
            conn.execute(insert(leads), rows_)
    engine.dispose()
    return len(rows_)


def settings_for(sim: Simulator, database_url: str, **lsq: Any) -> dict[str, Any]:
    """A config mapping pointing at `sim`, fast enough for tests."""
    fast = {"rate_limit_calls": 1000, "rate_limit_period_s": 1, "retry_backoff_s": 0.01,
            "timeout_s": 5, "concurrency": 4}
    return {"lsq": sim.lsq_settings(**{**fast, **lsq}), "database": {"url": database_url},
            "leads": {"query": "SELECT lead_id FROM leads"}}


def write_config(path: Path, sim: Simulator | None, database_url: str, **lsq: Any) -> Path:
    """A TOML file with settings_for()'s [lsq] (none without a simulator) and JSON logs."""
    settings = settings_for(sim, database_url, **lsq)["lsq"] if sim is not None else lsq
    path.write_text(config.to_toml({"lsq": settings, "database": {"url": database_url},
                                    "log": {"format": "json"}}))
    return path


def last_words(output: str) -> list[str]:
    """A command's closing error lines: `lsq-sync: ...` on a terminal or without logging,
    the message of the JSON `exit` event when logs are JSON lines."""
    found = []
    for line in output.splitlines():
        if line.startswith("lsq-sync: "):
            found.append(line)
        elif line.startswith("{") and '"event": "exit"' in line:
            found.append("lsq-sync: " + json.loads(line)["message"])
    return found


def rows(engine: Engine, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql), params).all())


def url_database(url: str) -> str | None:
    return make_url(url).database


def synced(engine: Engine, *, live: bool = True) -> dict[str, Any]:
    query = select(tasks)
    if live:
        query = query.where(tasks.c.deleted_at.is_(None))
    with engine.connect() as conn:
        return {row.task_id: row for row in conn.execute(query)}


def assert_matches(engine: Engine, sim: Simulator) -> None:
    """lsq_tasks (live rows) holds exactly the simulator's tasks, field by field."""
    expected = sim.state.all_tasks()
    got = synced(engine)
    assert set(got) == set(expected)
    for task_id, task in expected.items():
        row = got[task_id]
        assert row.lead_id == task["_lead"]
        assert row.name == task["Name"] and row.description == task["Description"]
        assert row.owner_id == task["OwnerID"] and row.owner_name == task["OwnerName"]
        assert row.created_by_name == task["CreatedByName"] and row.status == task["Status"]
        assert row.reminder_minutes == int(task["Reminder"])
        assert row.due_date == parse_date(task["DueDate"])
        assert row.created_on == parse_date(task["CreatedOn"])
        assert row.raw == {k: v for k, v in task.items() if k != "_lead"}
