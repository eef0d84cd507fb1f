"""write_batch notices changes by the hash of a task's raw JSON, and only rewrites those."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from lsq_sync import runs, store
from lsq_sync.models import tasks
from lsq_sync.store import LeadOutcome, raw_hash, write_batch
from lsq_sync.tasks import parse_task_list

LEAD = "5151aaaa-0000-4000-8000-000000000001"
T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)


def outcome(*names: str, extra: dict[str, Any] | None = None) -> LeadOutcome:
    items = [{"TaskID": f"t{i}", "Name": name, "Status": "Pending", **(extra or {})}
             for i, name in enumerate(names)]
    return LeadOutcome(1, LEAD, rows=parse_task_list({"TaskList": items}, LEAD))


def write(engine: Engine, result: LeadOutcome, now: datetime) -> store.BatchResult:
    run_id = runs.start(engine, "pull")
    with engine.begin() as conn:
        return write_batch(conn, [result], run_id=run_id, now=now)


def synced(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        return {r.task_id: r for r in conn.execute(select(tasks))}


def test_the_hash_ignores_key_order_and_sees_every_value() -> None:
    assert raw_hash({"a": 1, "b": [1, 2]}) == raw_hash({"b": [1, 2], "a": 1})
    assert raw_hash({"a": 1}) != raw_hash({"a": 1.5})
    assert raw_hash({"a": None}) != raw_hash({})
    assert len(raw_hash({"big": 2**70})) == 32  # beyond 64 bits: still hashed


def test_a_new_row_format_makes_every_row_look_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    before = raw_hash({"a": 1})
    monkeypatch.setattr(store, "ROW_FORMAT", store.ROW_FORMAT + 1)
    assert raw_hash({"a": 1}) != before


def test_only_changed_tasks_are_rewritten(engine: Engine) -> None:
    assert write(engine, outcome("one", "two"), T0).upserted == 2
    later = T0 + timedelta(minutes=5)
    result = write(engine, outcome("one", "TWO"), later)
    assert result.upserted == 1
    rows = synced(engine)
    assert rows["t1"].name == "TWO" and rows["t1"].raw_hash == raw_hash(rows["t1"].raw)
    assert rows["t0"].last_synced_at == later  # unchanged, but seen


def test_rows_from_before_the_hash_are_rewritten_once(engine: Engine) -> None:
    write(engine, outcome("one"), T0)
    with engine.begin() as conn:  # as migration 0005 leaves rows stored before it
        conn.execute(update(tasks).values(raw_hash=None))
    assert write(engine, outcome("one"), T0 + timedelta(minutes=1)).upserted == 1
    assert synced(engine)["t0"].raw_hash is not None
    assert write(engine, outcome("one"), T0 + timedelta(minutes=2)).upserted == 0
