"""Two fetches of one lead: the one sent later wins, whatever order they are written in;
a hint is consumed only by a fetch sent after it arrived, in the write of that fetch."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from lsq_sync.leadsquared.tasks import parse_task_list
from lsq_sync.store import hints, runs
from lsq_sync.store.models import lead_hints, lead_state, tasks
from lsq_sync.store.tasks import BatchResult, LeadOutcome, write_batch

LEAD = "5151aaaa-0000-4000-8000-0000000000a1"
T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


def fetch(name: str, sent: datetime | None, *, lead: str = LEAD,
          error: str | None = None) -> LeadOutcome:
    if error is not None:
        return LeadOutcome(1, lead, error=error, sent_at=sent)
    rows = parse_task_list({"TaskList": [{"TaskID": f"{lead[-4:]}-t", "Name": name,
                                          "Status": "Pending"}]}, lead)
    return LeadOutcome(1, lead, rows=rows, sent_at=sent)


def write(engine: Engine, outcome: LeadOutcome, now: datetime) -> tuple[int, BatchResult]:
    run_id = runs.start(engine, "pull")
    with engine.begin() as conn:
        return run_id, write_batch(conn, [outcome], run_id=run_id, now=now)


def names(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        return {r.lead_id: r.name for r in conn.execute(select(tasks))}


def test_a_fetch_sent_earlier_but_written_later_changes_nothing(engine: Engine) -> None:
    _, newer = write(engine, fetch("after the change", T0 + timedelta(seconds=2)),
                     T0 + timedelta(seconds=3))
    _, older = write(engine, fetch("before the change", T0 + timedelta(seconds=1)),
                     T0 + timedelta(seconds=4))
    assert (newer.overtaken, older.overtaken) == (0, 1)
    assert names(engine) == {LEAD: "after the change"}
    # ... and in the other order, each simply replaces the one before.
    _, latest = write(engine, fetch("later still", T0 + timedelta(seconds=5)),
                      T0 + timedelta(seconds=6))
    assert latest.overtaken == 0 and names(engine) == {LEAD: "later still"}


def test_overlapping_writes_keep_the_later_fetch_whichever_commits_first(
        engine: Engine) -> None:
    """The first writer holds its transaction open while the second writes: the second
    waits for the lead's row, then sees the first's fetch time (a new row in the first
    round, a row both find stored in the second)."""
    for first_sent, second_sent, expected in ((2, 1, "first"), (4, 3, "first"),
                                              (5, 6, "second")):
        outcome: dict[str, BatchResult] = {}
        holding = threading.Event()
        thread = threading.Thread(target=_write_after, args=(
            engine, holding, fetch("second", T0 + timedelta(seconds=second_sent)), outcome))
        thread.start()
        run_id = runs.start(engine, "pull")
        with engine.begin() as conn:
            write_batch(conn, [fetch("first", T0 + timedelta(seconds=first_sent))],
                        run_id=run_id, now=T0 + timedelta(seconds=10))
            holding.set()
            time.sleep(0.3)  # the second writer is now waiting on the row (or the file)
        thread.join(10)
        assert names(engine) == {LEAD: expected}
        assert outcome["result"].overtaken == (expected == "first")
        with engine.connect() as conn:
            stored = conn.execute(select(lead_state.c.fetched_at)).scalar_one()
        assert stored == T0 + timedelta(seconds=max(first_sent, second_sent))


def _write_after(engine: Engine, event: threading.Event, outcome: LeadOutcome,
                 into: dict[str, BatchResult]) -> None:
    event.wait(5)
    into["result"] = write(engine, outcome, T0 + timedelta(seconds=10))[1]


def hint_rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(lead_hints).order_by(lead_hints.c.id)))


def test_a_hint_is_consumed_only_by_a_fetch_sent_after_it_arrived(engine: Engine) -> None:
    with engine.begin() as conn:
        hints.add(conn, [hints.Hint(LEAD, None, "17")], T0 + timedelta(seconds=5))
        hints.add(conn, [hints.Hint(LEAD, None, "16")], T0 + timedelta(seconds=8))
    write(engine, fetch("a", T0 + timedelta(seconds=4)), T0 + timedelta(seconds=9))
    assert [h.consumed_at for h in hint_rows(engine)] == [None, None]
    write(engine, fetch("b", None, error="TransientError: 500"), T0 + timedelta(seconds=9))
    assert [h.consumed_at for h in hint_rows(engine)] == [None, None]
    run_id, _ = write(engine, fetch("c", T0 + timedelta(seconds=6)), T0 + timedelta(seconds=9))
    first, second = hint_rows(engine)
    assert (first.consumed_at, first.run_id) == (T0 + timedelta(seconds=9), run_id)
    assert second.consumed_at is None
    assert hints.pending_leads(engine) == [LEAD]
    write(engine, fetch("d", T0 + timedelta(seconds=8)), T0 + timedelta(seconds=9))
    assert hints.pending_leads(engine) == []
    assert hints.pending(engine)["hints"] == 0


def test_pending_leads_come_oldest_hint_first_and_once_each(engine: Engine) -> None:
    other = LEAD.replace("a1", "b2")
    with engine.begin() as conn:
        hints.add(conn, [hints.Hint(other), hints.Hint(other)], T0)
        hints.add(conn, [hints.Hint(LEAD)] * 50, T0 - timedelta(seconds=1))
    assert hints.pending_leads(engine) == [LEAD, other]
    assert hints.pending_leads(engine, limit=1) == [LEAD]
    state = hints.pending(engine)
    assert (state["hints"], state["leads"], state["oldest"]) == (52, 2, T0 - timedelta(
        seconds=1))


def test_a_hint_naming_only_a_task_finds_its_lead_now_or_after_a_pass(engine: Engine) -> None:
    write(engine, fetch("known", T0), T0)
    known_task = f"{LEAD[-4:]}-t"
    with engine.begin() as conn:
        hints.add(conn, [hints.Hint(None, known_task), hints.Hint(None, "unknown-task")],
                  T0 + timedelta(seconds=1))
    rows = hint_rows(engine)
    assert [(h.lead_id, h.task_id) for h in rows] == [(LEAD, known_task),
                                                      (None, "unknown-task")]
    other = LEAD.replace("a1", "c3")
    write(engine, LeadOutcome(1, other, rows=parse_task_list(
        {"TaskList": [{"TaskID": "unknown-task", "Name": "n"}]}, other), sent_at=T0), T0)
    assert hints.resolve(engine) == 1
    assert hint_rows(engine)[1].lead_id == other
    with engine.begin() as conn:  # one no lead holds, settled by a complete pass
        hints.add(conn, [hints.Hint(None, "nowhere")], T0 + timedelta(seconds=2))
        assert hints.settle_orphans(conn, T0 + timedelta(seconds=1), 1, T0) == 0
        assert hints.settle_orphans(conn, T0 + timedelta(seconds=3), 1, T0) == 1


def test_the_lead_record_counts_changes_and_quiet_time(engine: Engine) -> None:
    for seconds, name in ((0, "a"), (10, "a"), (25, "b"), (55, "b"), (60, "c")):
        write(engine, fetch(name, T0 + timedelta(seconds=seconds)), T0)
    with engine.connect() as conn:
        row = conn.execute(select(lead_state)).one()
    assert (row.fetches, row.changes) == (5, 2)
    assert row.quiet_s == 10 + 30
    assert row.change_gaps == "[15.0, 5.0]"
    assert row.changed_at == T0 + timedelta(seconds=60) and row.tasks == 1
