"""The run core: counts that follow commits, one stop, one driver loop."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from lsq_sync.control import Stats, Stop, StopReason
from lsq_sync.core.run import Run
from lsq_sync.errors import AuthError, CapReached
from lsq_sync.logs import get_logger
from lsq_sync.store import db, schema
from lsq_sync.store.models import sync_runs


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Engine]:
    engine = db.make_engine(sqlite_url)
    schema.upgrade(engine)
    yield engine
    engine.dispose()


def saved(engine: Engine, run_id: int, name: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(sync_runs.c[name]).where(sync_runs.c.id == run_id)).scalar()


def test_counts_are_saved_with_the_work_and_adopted_after_commit(store: Engine) -> None:
    with Run.open(store, "pull", get_logger()) as run:
        with run.begin() as tx:
            tx.add(leads_ok=3, tasks_upserted=7)
            tx.add(leads_ok=1)
            assert run.counts.leads_ok == 0  # not before the commit
        assert run.counts.leads_ok == 4 and saved(store, run.id, "leads_ok") == 4
        with pytest.raises(RuntimeError), run.begin() as tx:
            tx.conn.execute(update(sync_runs).where(sync_runs.c.id == run.id)
                            .values(error="half-written"))
            tx.add(leads_ok=100)
            raise RuntimeError("the batch failed")
        # Rolled back: neither the work nor its counts.
        assert run.counts.leads_ok == 4 and saved(store, run.id, "leads_ok") == 4
        assert saved(store, run.id, "error") is None
        assert run.counts.tasks_upserted == 7
    assert saved(store, run.id, "status") == "succeeded"


def test_counts_are_not_adopted_when_the_commit_fails(store: Engine) -> None:
    from sqlalchemy import event
    from sqlalchemy.exc import OperationalError

    def refuse(_conn: Any) -> None:
        raise OperationalError("COMMIT", {}, Exception("disk I/O error"))

    with Run.open(store, "pull", get_logger()) as run:
        event.listen(store, "commit", refuse)
        try:
            with pytest.raises(OperationalError), run.begin() as tx:
                tx.add(leads_ok=5)
        finally:
            event.remove(store, "commit", refuse)
        assert run.counts.leads_ok == 0  # the commit failed: nothing was done
        with run.begin() as tx:
            tx.add(leads_ok=1)
        assert run.counts.leads_ok == 1 and saved(store, run.id, "leads_ok") == 1


def test_a_write_aborted_by_a_lock_conflict_runs_again_whole(store: Engine) -> None:
    """A deadlock with another run (a pull and a push writing one lead): the unit of work
    runs again, and its counts are taken once."""
    from sqlalchemy.exc import OperationalError
    attempts: list[int] = []

    def work(tx: Any) -> str:
        attempts.append(1)
        tx.conn.execute(update(sync_runs).where(sync_runs.c.id == tx_run.id)
                        .values(error=f"attempt {len(attempts)}"))
        tx.add(leads_ok=2)
        if len(attempts) == 1:
            raise OperationalError("UPDATE", {}, Exception(1213, "Deadlock found"))
        return "written"

    with Run.open(store, "pull", get_logger()) as tx_run:
        assert tx_run.write(work) == "written"
        assert tx_run.counts.leads_ok == 2 and saved(store, tx_run.id, "leads_ok") == 2
        assert saved(store, tx_run.id, "error") == "attempt 2" and len(attempts) == 2


def test_calls_reach_the_row_with_every_save_and_at_the_end(store: Engine) -> None:
    with Run.open(store, "pull", get_logger()) as run:
        run.stats.take_call()
        run.stats.take_call()
        with run.begin():
            pass
        assert saved(store, run.id, "api_calls") == 2
        run.stats.take_call()
    assert saved(store, run.id, "api_calls") == 3


def test_the_first_stop_reason_stands() -> None:
    stop = Stop()
    assert stop.reason is None and not stop.is_set()
    stop.set(StopReason.CALL_CAP)
    stop.set(StopReason.SIGNAL)
    assert stop.is_set() and stop.reason == StopReason.CALL_CAP


def test_a_fatal_stop_is_forgiven_only_when_nothing_else_asked_to_stop() -> None:
    alone = Stop()
    alone.set(StopReason.FATAL)
    assert alone.forgive_fatal() and not alone.is_set() and alone.reason is None
    signalled = Stop()
    signalled.set(StopReason.FATAL)
    signalled.set(StopReason.SIGNAL)  # a SIGTERM during the outage still ends listen
    assert not signalled.forgive_fatal()
    assert signalled.is_set() and signalled.reason == StopReason.SIGNAL
    first = Stop()
    first.set(StopReason.SIGNAL)
    first.set(StopReason.FATAL)
    assert not first.forgive_fatal() and first.reason == StopReason.SIGNAL


def test_the_call_past_the_cap_is_refused_and_stops_the_run() -> None:
    stop = Stop()
    stats = Stats(cap=2, stop=stop)
    stats.take_call()
    stats.take_call()
    assert not stop.is_set()
    with pytest.raises(CapReached):
        stats.take_call()
    assert stats.calls == 2 and stop.reason == StopReason.CALL_CAP


def test_a_call_cap_stop_is_the_runs_error_and_partial(store: Engine) -> None:
    with Run.open(store, "push", get_logger(), max_calls_per_run=1) as run:
        run.stats.take_call()
        done = run.drive(lambda job: run.stats.take_call(), iter(range(3)), lambda _: None)
        assert not done
    assert run.stopped == ("stopped after 1 API calls (the run's call cap); the remaining "
                           "edits stay pending")
    assert saved(store, run.id, "status") == "partial"


def test_the_first_job_goes_alone(store: Engine) -> None:
    """Until the first result is back, no second job starts: a bad key costs one call."""
    first_done = threading.Event()
    early: list[int] = []  # jobs started while the first was under way

    def work(job: int) -> int:
        if job == 0:
            threading.Event().wait(0.2)  # time for any other job to start meanwhile
            first_done.set()
        elif not first_done.is_set():
            early.append(job)
        return job

    handled: list[int] = []
    with Run.open(store, "pull", get_logger(), workers=4) as run:
        assert run.drive(work, iter(range(20)), handled.extend)
    assert early == []
    assert sorted(handled) == list(range(20)) and handled[0] == 0


def test_a_fatal_error_stops_the_loop_and_is_raised_after_what_was_in_flight(
        store: Engine) -> None:
    handled: list[int] = []

    def work(job: int) -> int:
        if job == 1:
            raise AuthError("the API rejected the credentials")
        return job

    with pytest.raises(AuthError), Run.open(store, "pull", get_logger(), workers=1) as run:
        run.drive(work, iter(range(50)), handled.extend)
    assert run.stop.reason == StopReason.FATAL
    assert 0 in handled and len(handled) < 49  # stopped, not worked through
    assert saved(store, run.id, "status") == "failed"


def test_a_fatal_error_from_the_handler_stops_the_loop_too(store: Engine) -> None:
    def handle(done: list[int]) -> None:
        if 3 in done:
            raise AuthError("an Update came back 401")

    with pytest.raises(AuthError), Run.open(store, "push", get_logger(), workers=1) as run:
        run.drive(lambda job: job, iter(range(100)), handle)
    assert run.stop.reason == StopReason.FATAL


def test_a_signal_drops_the_queued_jobs(store: Engine) -> None:
    handled: list[int] = []
    with Run.open(store, "pull", get_logger(), workers=2) as run:
        def handle(done: list[int]) -> None:
            handled.extend(done)
            if len(handled) >= 5:
                run.stop.set(StopReason.SIGNAL)

        assert not run.drive(lambda job: job, iter(range(1000)), handle)
    assert 5 <= len(handled) < 20
    assert run.stopped == "stopped by a signal; the next pull continues with the rest"
    assert saved(store, run.id, "status") == "partial"


def test_throttles_are_counted_once_however_often_the_counts_are_saved(store: Engine) -> None:
    with Run.open(store, "pull", get_logger()) as run:
        run.stats.add(throttled=2)
        for _ in range(3):
            with run.begin():
                pass
        assert run.current().throttled == 2 and saved(store, run.id, "throttled") == 2


def test_a_complete_drive_leaves_the_stop_unset(store: Engine) -> None:
    """sync runs the pull after the push on the same run: a push that did everything must
    not leave the run stopping."""
    with Run.open(store, "sync", get_logger(), workers=3) as run:
        assert run.drive(lambda job: job, iter(range(10)), lambda _: None) is True
        assert not run.stop.is_set() and run.stopped is None


def test_an_error_in_the_handler_stops_the_workers_left_behind(store: Engine) -> None:
    def handle(done: list[int]) -> None:
        raise RuntimeError("the database went away")

    with pytest.raises(RuntimeError), Run.open(store, "pull", get_logger()) as run:
        run.drive(lambda job: job, iter(range(10)), handle)
    assert run.stop.reason == StopReason.FATAL


def test_after_the_first_job_the_workers_run_side_by_side(store: Engine) -> None:
    meet = threading.Barrier(4, timeout=20)  # broken unless four jobs run at once

    def work(job: int) -> int:
        if job > 0:
            meet.wait()
        return job

    with Run.open(store, "pull", get_logger(), workers=4) as run:
        assert run.drive(work, iter(range(5)), lambda _: None) is True


def test_a_stop_at_any_point_leaves_the_work_incomplete(store: Engine) -> None:
    """Even a stop that comes with the last result: a job the stop cut short is not always
    seen, so a pass stopped at any point is not complete (the next run finishes it)."""
    with structlog.testing.capture_logs() as events, \
            Run.open(store, "pull", get_logger(), workers=2) as run:
        def handle(done: list[int]) -> None:
            if 2 in done:
                run.stop.set(StopReason.SIGNAL)

        assert run.drive(lambda job: job, iter(range(3)), handle) is False
    stopping = [e for e in events if e["event"] == "stopping"]
    assert stopping == [{"event": "stopping", "log_level": "warning",
                         "reason": "stopped by a signal; the next pull continues with the "
                                   "rest", "in_flight": 0}]


def test_requests_in_flight_past_the_grace_are_abandoned(store: Engine) -> None:
    release = threading.Event()

    def work(job: int) -> int:
        if job == 2:
            run.stop.set(StopReason.SIGNAL)
        if job > 0:
            release.wait(30)  # an answer that does not come in time
        return job

    handled: list[int] = []
    try:
        with structlog.testing.capture_logs() as events, \
                Run.open(store, "pull", get_logger(), workers=4) as run:
            assert run.drive(work, iter(range(10)), handled.extend, grace_s=0.1) is False
    finally:
        release.set()
    assert handled == [0]
    abandoned = [e for e in events if e["event"] == "abandoned_in_flight"]
    assert abandoned == [{"event": "abandoned_in_flight", "log_level": "warning",
                          "requests": 4}]
    assert saved(store, run.id, "status") == "partial"


def test_the_tighter_cap_binds_and_the_day_counts_other_runs_only(store: Engine) -> None:
    from datetime import timedelta

    from lsq_sync.core.run import call_cap
    from lsq_sync.store import runs
    from lsq_sync.store.types import utcnow
    assert call_cap(store, 0, 0, 0) == (None, StopReason.CALL_CAP)
    assert call_cap(store, 0, 30, 0) == (30, StopReason.CALL_CAP)
    assert call_cap(store, 0, 0, 100) == (100, StopReason.DAILY_CAP)
    today, yesterday, mine = (runs.start(store, "pull") for _ in range(3))
    with store.begin() as conn:
        for run_id, calls in ((today, 60), (yesterday, 1000), (mine, 7)):
            conn.execute(update(sync_runs).where(sync_runs.c.id == run_id)
                         .values(api_calls=calls))
        midnight = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
        conn.execute(update(sync_runs).where(sync_runs.c.id == today)
                     .values(started_at=midnight))  # the first instant of the day counts
        conn.execute(update(sync_runs).where(sync_runs.c.id == yesterday)
                     .values(started_at=midnight - timedelta(microseconds=1)))
    assert call_cap(store, mine, 0, 100) == (40, StopReason.DAILY_CAP)
    assert call_cap(store, mine, 30, 100) == (30, StopReason.CALL_CAP)
    assert call_cap(store, mine, 40, 100) == (40, StopReason.CALL_CAP)
    assert call_cap(store, mine, 50, 100) == (40, StopReason.DAILY_CAP)
    assert call_cap(store, mine, 0, 50) == (0, StopReason.DAILY_CAP)  # never below 0
