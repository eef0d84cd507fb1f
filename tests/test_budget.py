"""The shared budget: one sliding window across processes, kept in the database."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from lsq_sync.budget import SharedSlots, bucket_for
from lsq_sync.ratelimit import RateLimiter


def test_two_processes_share_one_window(engine: Engine) -> None:
    t = [1000.0]
    first = SharedSlots(engine, "b", 3, 1.0, 0.0, clock=lambda: t[0])
    second = SharedSlots(engine, "b", 3, 1.0, 0.0, clock=lambda: t[0])
    assert [first.reserve(), second.reserve(), first.reserve()] == [0.0, 0.0, 0.0]
    assert second.reserve() == 1.0  # the window is full for both
    t[0] += 1.0
    assert second.reserve() == 0.0
    other_key = SharedSlots(engine, "c", 3, 1.0, 0.0, clock=lambda: t[0])
    assert other_key.reserve() == 0.0  # another API key has its own budget


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
