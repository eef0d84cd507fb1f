"""write_batch notices changes by the hash of a task's raw JSON, and only rewrites those."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from lsq_sync.leadsquared.tasks import parse_task_list
from lsq_sync.store import runs
from lsq_sync.store import tasks as store
from lsq_sync.store.models import tasks
from lsq_sync.store.tasks import LeadOutcome, raw_hash, write_batch

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


OTHER = "5151aaaa-0000-4000-8000-000000000002"
THIRD = "5151aaaa-0000-4000-8000-000000000003"


def lead_rows(lead: str, *names: str, prefix: str) -> list[dict[str, Any]]:
    items = [{"TaskID": f"{prefix}{i}", "Name": n, "Status": "Pending"}
             for i, n in enumerate(names)]
    return parse_task_list({"TaskList": items}, lead)


def table(engine: Engine, tbl: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(tbl)))


def test_a_batch_marks_each_lead_and_counts_failures_in_a_row(engine: Engine) -> None:
    from lsq_sync.store.models import failed_leads, run_leads
    runs_ = [runs.start(engine, "pull") for _ in range(2)]
    with engine.begin() as conn:  # both runs staged the same three leads
        for run_id in runs_:
            conn.execute(run_leads.insert(), [
                {"run_id": run_id, "seq": seq, "lead_id": lead}
                for seq, lead in enumerate((LEAD, OTHER, THIRD), start=1)])
    first = [LeadOutcome(1, LEAD, rows=lead_rows(LEAD, "a", "b", prefix="a")),
             LeadOutcome(2, OTHER, error="MXInvalidLeadException: locked"),
             LeadOutcome(3, THIRD, rows=lead_rows(THIRD, "c", prefix="c"),
                         skipped={"c9": "DueDate 'x' is not a date", "c8": "bad owner"})]
    with engine.begin() as conn:
        result = write_batch(conn, first, run_id=runs_[0], now=T0)
    assert (result.upserted, result.deleted, result.skipped) == (3, 0, 2)
    marks = {(r.run_id, r.seq): (r.state, r.error) for r in table(engine, run_leads)}
    assert marks == {
        (runs_[0], 1): ("ok", None),
        (runs_[0], 2): ("failed", "MXInvalidLeadException: locked"),
        (runs_[0], 3): ("partial", "skipped bad tasks: c9: DueDate 'x' is not a date; "
                                   "c8: bad owner"),
        (runs_[1], 1): ("todo", None), (runs_[1], 2): ("todo", None),
        (runs_[1], 3): ("todo", None)}  # another run's marks are its own
    (failed,) = table(engine, failed_leads)
    assert (failed.lead_id, failed.failures, failed.first_failed_at, failed.last_failed_at,
            failed.last_run_id, failed.last_error) == (
        OTHER, 1, T0, T0, runs_[0], "MXInvalidLeadException: locked")

    later = T0 + timedelta(minutes=5)
    again = [LeadOutcome(2, OTHER, error="x" * 1500), LeadOutcome(1, LEAD, error=None)]
    with engine.begin() as conn:
        write_batch(conn, again, run_id=runs_[1], now=later)
    rows = {r.lead_id: r for r in table(engine, failed_leads)}
    assert set(rows) == {OTHER, LEAD}
    assert (rows[OTHER].failures, rows[OTHER].first_failed_at, rows[OTHER].last_failed_at,
            rows[OTHER].last_run_id, rows[OTHER].last_error) == (
        2, T0, later, runs_[1], "x" * 1000)
    assert (rows[LEAD].failures, rows[LEAD].last_error) == (1, "")
    marks = {(r.run_id, r.seq): (r.state, r.error) for r in table(engine, run_leads)}
    assert marks[(runs_[1], 2)] == ("failed", "x" * 1000)
    assert marks[(runs_[1], 1)] == ("failed", "")
    assert synced(engine)["a0"].last_synced_at == T0  # the failed lead left its rows

    with engine.begin() as conn:  # fetched well at last: its failures are forgotten
        write_batch(conn, [LeadOutcome(2, OTHER, rows=[])], run_id=runs_[1], now=later)
    assert [r.lead_id for r in table(engine, failed_leads)] == [LEAD]


def test_deletion_restoring_and_moving_mark_changed_at(engine: Engine) -> None:
    with engine.begin() as conn:
        write_batch(conn, [LeadOutcome(1, LEAD, rows=lead_rows(LEAD, "a", "b", prefix="t")),
                           LeadOutcome(2, OTHER, rows=lead_rows(OTHER, "c", prefix="o"))],
                    run_id=runs.start(engine, "pull"), now=T0)
    later = T0 + timedelta(minutes=1)
    # t1 is missing but was skipped as bad (so kept); o0 moved to LEAD.
    moved = [*lead_rows(LEAD, "a", prefix="t"), lead_rows(LEAD, "c", prefix="o")[0]]
    with engine.begin() as conn:
        result = write_batch(conn, [LeadOutcome(1, LEAD, rows=moved, skipped={"t1": "bad"}),
                                    LeadOutcome(2, OTHER, rows=[])],
                             run_id=runs.start(engine, "pull"), now=later)
    rows = synced(engine)
    assert result.deleted == 0 and rows["t1"].deleted_at is None  # skipped, so kept
    assert rows["o0"].lead_id == LEAD and rows["o0"].changed_at == later
    assert rows["t0"].changed_at == T0 and rows["t0"].last_synced_at == later
    last = later + timedelta(minutes=1)
    with engine.begin() as conn:
        result = write_batch(conn, [LeadOutcome(1, LEAD, rows=moved)],
                             run_id=runs.start(engine, "pull"), now=last)
    rows = synced(engine)
    assert result.deleted == 1
    assert (rows["t1"].deleted_at, rows["t1"].changed_at) == (last, last)
    assert (rows["t0"].deleted_at, rows["t0"].changed_at) == (None, T0)
    back = last + timedelta(minutes=1)
    with engine.begin() as conn:
        result = write_batch(conn, [LeadOutcome(1, LEAD, rows=lead_rows(LEAD, "a", "b",
                                                                         prefix="t"))],
                             run_id=runs.start(engine, "pull"), now=back)
    rows = synced(engine)
    assert (rows["t1"].deleted_at, rows["t1"].changed_at) == (None, back)
    assert rows["t1"].first_seen_at == T0
    assert (rows["o0"].deleted_at, rows["o0"].changed_at) == (back, back)


def test_history_closes_each_version_and_records_deletions(engine: Engine) -> None:
    from lsq_sync.store.models import task_history

    def batch(names: tuple[str, ...], now: datetime) -> None:
        with engine.begin() as conn:
            write_batch(conn, [LeadOutcome(1, LEAD, rows=lead_rows(LEAD, *names, prefix="h"))],
                        run_id=runs.start(engine, "pull"), now=now, history=True)

    t1, t2, t3 = (T0 + timedelta(minutes=m) for m in (1, 2, 3))
    batch(("a", "b"), T0)
    batch(("a", "B"), t1)      # h1 renamed
    batch(("a",), t2)          # h1 deleted
    batch(("a",), t3)          # nothing changed: no version
    versions = sorted(((r.task_id, r.name, r.valid_from, r.valid_to, r.deleted)
                       for r in table(engine, task_history)), key=lambda v: (v[0], v[2]))
    assert versions == [
        ("h0", "a", T0, None, False),
        ("h1", "b", T0, t1, False),
        ("h1", "B", t1, t2, False),
        ("h1", "B", t2, None, True),
    ]
    with engine.begin() as conn:  # without `history`, nothing is written there
        write_batch(conn, [LeadOutcome(1, LEAD, rows=lead_rows(LEAD, "z", prefix="h"))],
                    run_id=runs.start(engine, "pull"), now=t3 + timedelta(minutes=1))
    assert len(table(engine, task_history)) == 4
