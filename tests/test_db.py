"""Engines and transactions: lock conflicts are retried, other errors are not."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from lsq_sync.store import db


class _Orig(Exception):
    def __init__(self, *args: object, sqlstate: str | None = None) -> None:
        super().__init__(*args)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(("orig", "conflict"), [
    (_Orig(1213, "Deadlock found when trying to get lock"), True),
    (_Orig(1205, "Lock wait timeout exceeded"), True),
    (_Orig("deadlock detected", sqlstate="40P01"), True),
    (_Orig("could not serialize access", sqlstate="40001"), True),
    (_Orig(1062, "Duplicate entry"), False),
    (_Orig("duplicate key", sqlstate="23505"), False),
    (_Orig("database is locked"), False),
])
def test_is_conflict_knows_the_codes(orig: Exception, conflict: bool) -> None:
    assert db.is_conflict(OperationalError("UPDATE x", {}, orig)) is conflict


def test_a_conflict_is_retried_and_other_errors_are_not() -> None:
    calls = []

    def deadlocks_twice() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("DELETE", {}, _Orig(1213, "Deadlock found"))
        return "done"

    assert db.retry_conflicts(deadlocks_twice) == "done" and len(calls) == 3

    refused = []

    def duplicate() -> None:
        refused.append(1)
        raise IntegrityError("INSERT", {}, _Orig(1062, "Duplicate entry"))

    with pytest.raises(IntegrityError):
        db.retry_conflicts(duplicate)
    assert len(refused) == 1


def test_a_conflict_that_persists_goes_up_after_the_last_attempt() -> None:
    calls = []

    def always() -> None:
        calls.append(1)
        raise OperationalError("DELETE", {}, _Orig("deadlock detected", sqlstate="40P01"))

    with pytest.raises(OperationalError):
        db.retry_conflicts(always, attempts=3)
    assert len(calls) == 3


def test_a_real_deadlock_is_retried_to_success(engine: Engine) -> None:
    """Two transactions lock two rows in opposite orders: the database kills one, and
    retry_conflicts runs it again, so both units of work land."""
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite takes one writer at a time: no deadlock to make")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE deadlock_probe (id INT PRIMARY KEY, n INT)"))
        conn.execute(text("INSERT INTO deadlock_probe VALUES (1, 0), (2, 0)"))
    both_hold_one = threading.Barrier(2, timeout=30)
    attempts = {"a": 0, "b": 0}

    def unit(name: str, first: int, second: int) -> None:
        attempts[name] += 1
        with engine.begin() as conn:
            conn.execute(text("UPDATE deadlock_probe SET n = n + 1 WHERE id = :i"),
                         {"i": first})
            if attempts[name] == 1:
                both_hold_one.wait()  # only the first attempts meet: the retry runs alone
            conn.execute(text("UPDATE deadlock_probe SET n = n + 1 WHERE id = :i"),
                         {"i": second})

    errors: list[BaseException] = []

    def run(name: str, first: int, second: int) -> None:
        try:
            db.retry_conflicts(lambda: unit(name, first, second))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=("a", 1, 2)),
               threading.Thread(target=run, args=("b", 2, 1))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    try:
        assert errors == []
        assert sorted(attempts.values()) == [1, 2]  # one was the deadlock's victim
        with engine.connect() as conn:
            counts = conn.execute(text("SELECT n FROM deadlock_probe ORDER BY id")).scalars()
            assert list(counts) == [2, 2]  # each unit of work landed once, whole
    finally:
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE deadlock_probe"))
