"""The shared budget: one sliding window across processes, kept in the database."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from lsq_sync.leadsquared.budget import SharedSlots, bucket_for
from lsq_sync.leadsquared.ratelimit import RateLimiter


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
    pair.restamp(write)                          # sent only now, after the read's answer
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
