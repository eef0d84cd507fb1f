"""The shared budget: one sliding window across processes, kept in the database."""

from __future__ import annotations

import bisect
import random
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from lsq_sync.errors import StoreError
from lsq_sync.leadsquared.budget import SharedSlots, bucket_for
from lsq_sync.leadsquared.ratelimit import RateLimiter
from lsq_sync.store.models import rate_buckets, rate_slots


def test_two_processes_share_one_window(engine: Engine) -> None:
    t = [1000.0]
    first = SharedSlots(engine, "b", 3, 1.0, 0.0, clock=lambda: t[0])
    second = SharedSlots(engine, "b", 3, 1.0, 0.0, clock=lambda: t[0])
    assert [first.reserve()[0], second.reserve()[0], first.reserve()[0]] == [0.0, 0.0, 0.0]
    assert second.reserve() == (1.0, [])  # the window is full for both
    t[0] += 1.0
    assert second.reserve()[0] == 0.0
    other_key = SharedSlots(engine, "c", 3, 1.0, 0.0, clock=lambda: t[0])
    assert other_key.reserve()[0] == 0.0  # another API key has its own budget


def test_a_pair_of_shared_slots_is_moved_or_given_back(engine: Engine) -> None:
    t = [1000.0]
    other = SharedSlots(engine, "b", 3, 1.0, 0.0, clock=lambda: t[0])
    pair = SharedSlots(engine, "b", 3, 1.0, 0.0, clock=lambda: t[0])
    assert other.reserve()[0] == 0.0
    t[0] = 1000.2
    wait, (read, write) = pair.reserve(2)
    assert wait == 0.0 and read != write
    wait, keys = other.reserve()                 # three sends in the window
    assert abs(wait - 0.8) < 1e-9 and keys == []
    t[0] = 1000.5
    pair.sent(write)                             # sent only now, after the read's answer
    t[0] = 1001.1                                # 1000.0 has left; 1000.2 and 1000.5 hold
    assert other.reserve()[0] == 0.0
    assert abs(other.reserve()[0] - 0.1) < 1e-9  # until the read (1000.2) leaves
    t[0] = 1001.3                                # the write holds until 1001.5, not 1001.2
    assert abs(other.reserve(2)[0] - 0.2) < 1e-9
    pair.release([write])                        # a slot given back frees its place at once
    assert other.reserve(2)[0] == 0.0


def test_a_stated_limit_tightens_the_shared_window(engine: Engine) -> None:
    t = [1000.0]
    shared = SharedSlots(engine, "b", 25, 5.0, 0.0, clock=lambda: t[0])
    limiter = RateLimiter(25, 5.0, margin=0.0, clock=lambda: t[0], shared=shared)
    limiter.throttled(10, 5.0)
    assert (shared.calls, shared.period) == (10, 5.0)
    limiter.throttled(30, 5.0)  # looser: ignored
    assert shared.calls == 10


def test_the_bucket_name_does_not_reveal_the_key() -> None:
    key = "u$abc123secret"
    assert key not in bucket_for(key) and "abc123" not in bucket_for(key)
    assert bucket_for(key) == bucket_for(key) != bucket_for(key + "x")


def test_an_urgent_taker_gets_the_next_free_slot(engine: Engine) -> None:
    """listen's fetches (a change is known to wait) go before a pass's: an urgent taker
    that finds the window full claims the slots freed until its turn."""
    t = [1000.0]
    passing = SharedSlots(engine, "b", 2, 1.0, 0.0, clock=lambda: t[0])
    urgent = SharedSlots(engine, "b", 2, 1.0, 0.0, clock=lambda: t[0], urgent=True)
    assert passing.reserve()[0] == 0.0
    t[0] = 1000.5
    assert passing.reserve()[0] == 0.0
    wait, keys = urgent.reserve()              # full: it waits until 1001.0, and says so
    assert abs(wait - 0.5) < 1e-9 and keys == []
    t[0] = 1001.0                              # a slot is free, but it is the urgent one's
    wait, keys = passing.reserve()
    assert 0 < wait <= 0.05 + 1e-9 and keys == []
    assert urgent.reserve()[0] == 0.0
    t[0] = 1001.06                             # the claim has lapsed: the window decides
    assert abs(passing.reserve()[0] - 0.44) < 1e-9
    t[0] = 1001.5
    assert passing.reserve()[0] == 0.0         # no urgent taker waits: all slots are used


def busiest(sends: list[float], period: float) -> int:
    """The most sends in any half-open window of `period` seconds."""
    sends = sorted(sends)
    return max((bisect.bisect_left(sends, s + period) - i for i, s in enumerate(sends)),
               default=0)


def test_two_busy_processes_taking_blocks_never_exceed_the_window(engine: Engine) -> None:
    """On a controlled clock: two processes ask as fast as they may (one slot or a pair),
    and each send goes out up to 0.15 s after its reservation, sometimes past its row's
    stamp. However the blocks fall, no window of a period holds more than the limit, and
    the two together use nearly all of it."""
    rng = random.Random(7)
    t = [1000.0]
    procs = [SharedSlots(engine, "b", 10, 1.0, 0.0, clock=lambda: t[0], late_s=0.0)
             for _ in range(2)]
    sends: list[float] = []
    pending: list[tuple[float, int, int]] = []
    next_try = [t[0], t[0]]
    while t[0] < 1020.0:
        for i, proc in enumerate(procs):
            if t[0] >= next_try[i]:
                wait, keys = proc.reserve(2 if rng.random() < 0.2 else 1)
                pending += [(t[0] + rng.uniform(0, 0.15), i, key) for key in keys]
                next_try[i] = t[0] + (wait or rng.uniform(0, 0.01))
        for due in sorted(p for p in pending if p[0] <= t[0]):
            pending.remove(due)
            procs[due[1]].sent(due[2])
            sends.append(t[0])
        t[0] = round(t[0] + 0.001, 6)
    assert busiest(sends, 1.0) <= 10
    assert len(sends) >= 0.9 * 10 * 20  # the limit for 20 s, nearly all used


def test_a_fast_taker_visits_the_database_once_a_block(engine: Engine) -> None:
    t = [1000.0]
    fast = SharedSlots(engine, "b", 10_000, 1.0, 0.0, clock=lambda: t[0])
    for _ in range(300):
        wait, (key,) = fast.reserve()
        assert wait == 0.0
        fast.sent(key)
        t[0] += 0.002  # 500 calls a second
    assert fast.visits <= 300 / 8  # blocks grew: one transaction for many calls
    slow = SharedSlots(engine, "c", 10_000, 1.0, 0.0, clock=lambda: t[0])
    for _ in range(5):
        t[0] += 1.0  # a call a second: a block would lapse unused, so it takes one
        slow.reserve()
    assert slow.visits == 5
    with engine.connect() as conn:
        held = conn.execute(select(func.count()).select_from(rate_slots).where(
            rate_slots.c.bucket == "c")).scalar_one()
    assert held == 5


def test_prepaid_slots_hold_their_places_until_given_back_or_sent(engine: Engine) -> None:
    t = [1000.0]
    taker = SharedSlots(engine, "b", 10, 1.0, 0.0, clock=lambda: t[0])
    other = SharedSlots(engine, "b", 10, 1.0, 0.0, clock=lambda: t[0])
    used = []
    for _ in range(3):  # back within the lease: blocks of 1, 1, then 2 (one prepaid)
        used += taker.reserve()[1]
        t[0] += 0.001
    assert len(used) == 3 and taker.visits == 3
    assert other.reserve(7)[0] > 0          # 4 rows held: the prepaid one counts too
    assert other.reserve(6)[0] == 0.0       # the window is now full
    taker.close()                           # the run ends: its prepaid slot is given back
    assert other.reserve()[0] == 0.0

    def stamp(key: int) -> float:
        with engine.connect() as conn:
            return float(conn.execute(select(rate_slots.c.sent_at)
                                      .where(rate_slots.c.id == key)).scalar_one())

    t[0] = 2000.0
    again = SharedSlots(engine, "c", 10, 1.0, 0.0, clock=lambda: t[0])
    for _ in range(3):
        again.reserve()
        t[0] += 0.001
    t[0] = 2000.01
    (prepaid,) = again.reserve()[1]         # from the pool: held until 2000.202 + 1 s
    assert abs(stamp(prepaid) - 2000.202) < 1e-6
    again.sent(prepaid)                     # it went out at 2000.01
    t[0] = 2000.02
    again.reserve()                         # the next visit writes the real time back
    assert abs(stamp(prepaid) - 2000.01) < 1e-6
    late_key = again.reserve()[1][0]        # stamped 2000.02, sent 0.3 s later
    t[0] = 2000.32
    again.sent(late_key)                    # written at once: the row must not free early
    assert abs(stamp(late_key) - 2000.32) < 1e-6


def test_an_urgent_taker_with_sends_to_write_back_claims_in_the_same_transaction(
        engine: Engine) -> None:
    """The urgent taker's claim is made inside the visit that found the window full (a
    second transaction would wait on the bucket row its own visit holds)."""
    t = [1000.0]
    urgent = SharedSlots(engine, "b", 4, 1.0, 0.0, clock=lambda: t[0], urgent=True)
    passing = SharedSlots(engine, "b", 4, 1.0, 0.0, clock=lambda: t[0])
    for _ in range(3):  # blocks of 1, 1, 2: the window's four slots, one of them prepaid
        urgent.reserve()
        t[0] += 0.001
    (prepaid,) = urgent.reserve()[1]
    urgent.sent(prepaid)                    # early: its real time waits for the next visit
    t[0] += 0.001
    wait, keys = urgent.reserve()           # that visit finds the window full
    assert wait > 0 and keys == []
    with engine.connect() as conn:
        until = conn.execute(select(rate_buckets.c.urgent_until)
                             .where(rate_buckets.c.bucket == "b")).scalar_one()
    assert until is not None and until >= t[0] + wait
    t[0] += wait                            # a slot frees: it is the urgent taker's
    assert passing.reserve()[0] > 0
    assert urgent.reserve()[0] == 0.0


def test_a_visit_that_fails_hands_out_none_of_its_rows(engine: Engine) -> None:
    """The database fails in the middle of a visit (its third INSERT): the transaction is
    rolled back, so none of its rows may be handed out later, or a send would go out with
    no row holding its place."""
    t = [1000.0]
    taker = SharedSlots(engine, "b", 10, 1.0, 0.0, clock=lambda: t[0])
    for _ in range(3):  # blocks of 1, 1, 2; the next visit takes 4
        taker.reserve()
        t[0] += 0.001
    taker.reserve()  # the prepaid one
    inserts = [0]

    def fail_third(conn: Any, statement: Any, *_: Any) -> None:
        if getattr(statement, "is_insert", False) and statement.table is rate_slots:
            inserts[0] += 1
            if inserts[0] == 3:
                raise OperationalError("INSERT", {}, Exception("the server went away"))

    event.listen(engine, "after_execute", fail_third)
    try:
        with pytest.raises(StoreError):
            taker.reserve()
    finally:
        event.remove(engine, "after_execute", fail_third)
    t[0] += 0.001
    handed = [key for _ in range(4) for key in taker.reserve()[1]]
    with engine.connect() as conn:
        held = set(conn.execute(select(rate_slots.c.id)).scalars())
    assert handed and set(handed) <= held
