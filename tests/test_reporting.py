"""docs/reporting.md and the views: every query runs on every dialect and agrees."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, text
from sqlalchemy.engine import Engine

from lsq_sync.store.models import task_edits, task_history, tasks

DOC = Path(__file__).resolve().parent.parent / "docs" / "reporting.md"
QUERIES = re.findall(r"```sql\n(.*?)```", DOC.read_text(), re.S)
NOW = datetime.now(UTC).replace(microsecond=0)
OWNER_A, OWNER_B = "190e7b6f-39da-11e6-b61b-22000aa8e760", "7cf19f34-21d6-11e6-8091-02b01d637af7"


def task(task_id: str, lead: str, owner: str, status: str, due: timedelta | None,
         deleted: bool = False, reminder: int = 15) -> dict[str, Any]:
    return {"task_id": task_id, "lead_id": lead, "name": f"Task {task_id}",
            "owner_id": OWNER_A if owner == "Asha" else OWNER_B, "owner_name": owner,
            "status": status, "due_date": NOW + due if due is not None else None,
            "reminder_minutes": reminder, "first_seen_at": NOW, "last_synced_at": NOW,
            "deleted_at": NOW if deleted else None, "raw": {"TaskID": task_id}}


ROWS = [
    task("t1", "lead-1", "Asha", "Pending", timedelta(days=-2)),        # overdue
    task("t2", "lead-1", "Asha", "Pending", timedelta(days=3)),         # open
    task("t3", "lead-2", "Asha", "Completed", timedelta(days=-5)),      # done
    task("t4", "lead-2", "Swesh", "pending", timedelta(hours=-1)),      # overdue, lower case
    task("t5", "lead-3", "Swesh", "Cancelled", timedelta(days=-1), reminder=0),  # done
    task("t6", "lead-3", "Swesh", "Pending", timedelta(days=-9), deleted=True),  # deleted
    task("t7", "lead-4", "Swesh", "Pending", None, reminder=0),          # open, no due date
]


def version(row: dict[str, Any], owner: str, since: timedelta, until: timedelta | None,
            ) -> dict[str, Any]:
    other = task(row["task_id"], row["lead_id"], owner, row["status"], None)
    return {**row, "owner_id": other["owner_id"], "owner_name": owner,
            "valid_from": NOW - since, "valid_to": NOW - until if until is not None else None,
            "deleted": False}


# t1 moved from Asha to Swesh two days ago; t2 from Swesh to Asha a month ago.
HISTORY = [version(ROWS[0], "Asha", timedelta(days=10), timedelta(days=2)),
           version(ROWS[0], "Swesh", timedelta(days=2), None),
           version(ROWS[1], "Swesh", timedelta(days=60), timedelta(days=30)),
           version(ROWS[1], "Asha", timedelta(days=30), None)]


@pytest.fixture
def filled(engine: Engine) -> Engine:
    with engine.begin() as conn:
        conn.execute(insert(tasks), ROWS)
        conn.execute(insert(task_edits), [
            {"task_id": "t1", "name": "x", "due_date": None, "status": "sent", "attempts": 1,
             "last_error": None},
            {"task_id": "t2", "name": None, "due_date": "bad", "status": "failed", "attempts": 0,
             "last_error": "due_date 'bad' is not YYYY-MM-DD HH:MM:SS (UTC)"}])
        conn.execute(text("INSERT INTO lsq_task_edits (task_id, name) VALUES ('t4', 'y')"))
        conn.execute(insert(task_history), HISTORY)
        conn.execute(text(
            "INSERT INTO lsq_sync_runs (command, started_at, status, api_calls, throttled) "
            "VALUES ('pull', :t, 'partial', 40, 2)"), {"t": NOW.replace(tzinfo=None)})
    return engine


def query(engine: Engine, sql: str) -> list[tuple[Any, ...]]:
    def plain(value: Any) -> Any:
        return float(value) if isinstance(value, Decimal) else value
    with engine.connect() as conn:
        return [tuple(plain(v) for v in row) for row in conn.execute(text(sql))]


def test_the_doc_has_a_dozen_queries() -> None:
    assert len(QUERIES) >= 12


@pytest.mark.parametrize("number", range(1, len(QUERIES) + 1))
def test_every_documented_query_runs(filled: Engine, number: int) -> None:
    rows = query(filled, QUERIES[number - 1])
    assert rows, f"query {number} returned nothing on the sample data"


def test_the_views_hold_the_expected_rows(filled: Engine) -> None:
    open_ids = {r[0] for r in query(filled, "SELECT task_id FROM lsq_open_tasks")}
    assert open_ids == {"t1", "t2", "t4", "t7"}
    overdue = {r[0] for r in query(filled, "SELECT task_id FROM lsq_overdue_tasks")}
    assert overdue == {"t1", "t4"}
    counts = set(query(filled, "SELECT owner_name, status, tasks FROM lsq_task_counts_by_owner"))
    assert counts == {("Asha", "Pending", 2), ("Asha", "Completed", 1),
                      ("Swesh", "pending", 1), ("Swesh", "Cancelled", 1),
                      ("Swesh", "Pending", 1)}


def test_documented_answers_agree_across_dialects(filled: Engine) -> None:
    """The same rows on every database (compared with what SQLite-free logic expects)."""
    assert query(filled, QUERIES[0]) == [("Asha", 2), ("Swesh", 2)]
    assert query(filled, QUERIES[1]) == [("Asha", 1), ("Swesh", 1)]
    assert query(filled, QUERIES[4]) == [("Asha", 2, 1), ("Swesh", 2, 1)]
    assert query(filled, QUERIES[6]) == [("lead-3", 1)]
    assert [r[:2] for r in query(filled, QUERIES[9])] == [("failed", 1), ("pending", 1),
                                                         ("sent", 1)]
    assert [r[:4] for r in query(filled, QUERIES[13])] == [("t1", "Task t1", "Asha", "Swesh")]
    assert [(r[0], r[3]) for r in query(filled, QUERIES[14])] == [("t1", False),
                                                                  ("t1", False)]


def test_timestamps_round_trip_as_utc(filled: Engine) -> None:
    from sqlalchemy import select
    with filled.connect() as conn:
        due = conn.execute(select(tasks.c.due_date).where(tasks.c.task_id == "t1")).scalar_one()
    assert due == NOW - timedelta(days=2) and due.tzinfo is UTC
