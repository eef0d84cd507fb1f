"""The limiter: no window ever holds more than the limit, and the limit is reached."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsq_sync.errors import Stopped
from lsq_sync.leadsquared.ratelimit import Budget, RateLimiter


def busiest(sends: list[float], period: float) -> int:
    """Most sends in any half-open window [t, t + period)."""
    sends = sorted(sends)
    best = 0
    start = 0
    for end, t in enumerate(sends):
        while sends[start] + period <= t:
            start += 1
        best = max(best, end - start + 1)
    return best


def drive(budget: Budget, arrivals: list[float]) -> list[float]:
    """Each arrival waits for its slot, as a caller of acquire() would."""
    sends = []
    now = 0.0
    for arrival in sorted(arrivals):
        now = max(now, arrival)
        while (wait := budget.reserve(now)) > 0:
            now += wait
        sends.append(now)
    return sends


@settings(max_examples=200, deadline=None)
@given(calls=st.integers(1, 30), period=st.floats(0.1, 10),
       arrivals=st.lists(st.floats(0, 60), min_size=1, max_size=300))
def test_no_window_exceeds_the_limit(calls: int, period: float, arrivals: list[float]) -> None:
    sends = drive(Budget(calls, period, margin=0.0), arrivals)
    assert busiest(sends, period) <= calls


@settings(max_examples=100, deadline=None)
@given(calls=st.integers(1, 30), period=st.floats(0.1, 10), n=st.integers(1, 400))
def test_a_backlog_uses_the_whole_limit(calls: int, period: float, n: int) -> None:
    sends = drive(Budget(calls, period, margin=0.0), [0.0] * n)
    # Every full window is full, and the last send is as early as the limit allows.
    assert busiest(sends, period) == min(calls, n)
    rounds = (n - 1) // calls
    assert abs(sends[-1] - rounds * period) < 1e-6


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(st.tuples(st.floats(0, 0.5), st.floats(-5, 0), st.booleans()),
                      min_size=1, max_size=300))
def test_clock_jumps_never_let_a_burst_through(
        steps: list[tuple[float, float, bool]]) -> None:
    """The clock may step back at any time; sends are judged by the real time they left
    at (what the server sees), never by the clock's own reading."""
    budget = Budget(5, 1.0, margin=0.0)
    real, offset = 0.0, 0.0
    sends = []
    for elapsed, step, try_send in steps:
        real += elapsed
        offset += step  # the clock reads `offset` seconds off real time from now on
        if try_send and budget.reserve(real + offset) == 0:
            sends.append(real)
    assert busiest(sends, 1.0) <= 5


def test_a_stated_lower_limit_is_obeyed_from_then_on() -> None:
    budget = Budget(25, 5.0, margin=0.0)
    assert budget.add_limit(10, 5.0)
    assert not budget.add_limit(30, 5.0)  # looser than what we already obey
    sends = drive(budget, [0.0] * 40)
    assert busiest(sends, 5.0) == 10
    assert budget.rate == 2.0


def test_a_stated_limit_counts_the_sends_already_made() -> None:
    budget = Budget(25, 5.0, margin=0.0)
    sends = drive(budget, [0.0] * 8)
    assert budget.add_limit(10, 5.0)
    # 8 of the stated 10 are used: 2 more now, the 11th when the first send leaves.
    sends += drive(budget, [1.0] * 3)
    assert sends[8:] == [1.0, 1.0, 5.0]
    assert busiest(sends, 5.0) == 10


def test_pause_holds_every_send() -> None:
    budget = Budget(25, 5.0, margin=0.0)
    budget.pause(0.0, 5.0)
    assert budget.reserve(1.0) == 4.0
    assert budget.reserve(5.0) == 0.0


def test_margin_keeps_a_slot_a_little_longer() -> None:
    budget = Budget(1, 1.0, margin=0.05)
    assert budget.reserve(0.0) == 0.0
    assert abs(budget.reserve(1.0) - 0.05) < 1e-9


def test_acquire_blocks_and_stop_interrupts() -> None:
    t = [0.0]
    limiter = RateLimiter(1, 100.0, margin=0.0, clock=lambda: t[0])
    limiter.acquire()
    errors: list[BaseException] = []

    def second() -> None:
        try:
            limiter.acquire()
        except Stopped as exc:
            errors.append(exc)

    thread = threading.Thread(target=second)
    thread.start()
    limiter.stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert len(errors) == 1


def test_throttled_adopts_the_stated_limit_and_pauses() -> None:
    t = [10.0]
    limiter = RateLimiter(25, 5.0, margin=0.0, clock=lambda: t[0])
    assert limiter.throttled(10, 5.0) is True
    assert limiter.rate == 2.0
    assert limiter.budget.delay(t[0]) == 0.5  # one slot at the stated rate
    assert limiter.throttled(10, 5.0) is False
    assert limiter.budget.delay(t[0]) == 1.0  # doubled for the second in a row


def test_throttle_pauses_grow_to_a_period_and_reset_after_quiet() -> None:
    t = [0.0]
    limiter = RateLimiter(25, 5.0, margin=0.0, clock=lambda: t[0])
    pauses = []
    for _ in range(8):
        limiter.throttled(None, None)
        pauses.append(limiter.budget.delay(t[0]))
    assert pauses[:3] == pytest.approx([0.2, 0.4, 0.8]) and max(pauses) == 5.0
    assert limiter.budget.margin == 0.25  # widened, capped at 5% of the period
    t[0] = 100.0
    limiter.throttled(None, None)
    assert limiter.budget.delay(t[0]) == pytest.approx(0.2)


def test_a_late_send_moves_its_slot_later() -> None:
    budget = Budget(2, 1.0, margin=0.0)
    assert budget.reserve(0.0) == 0.0 and budget.reserve(0.0) == 0.0
    budget.restamp(0.0, 0.3)  # the first request only left after connecting
    assert budget.delay(1.0) == 0.0  # the other slot (sent at 0.0) has expired
    budget.reserve(1.0)
    assert abs(budget.delay(1.0) - 0.3) < 1e-9  # the moved one holds until 1.3
    assert list(budget.windows[0].sends) == [0.3, 1.0]


class Refusing:
    """A shared budget that is full `refusals` times, then has room."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.taken = 0
        self.sent_keys: list[int] = []
        self.released: list[int] = []
        self.closed = False

    def reserve(self, n: int = 1) -> tuple[float, list[int]]:
        if self.refusals:
            self.refusals -= 1
            return 0.25, []
        self.taken += n
        return 0.0, list(range(self.taken - n, self.taken))

    def sent(self, key: int) -> None:
        self.sent_keys.append(key)

    def release(self, keys: Sequence[int]) -> None:
        self.released.extend(keys)

    def tighten(self, calls: int, period: float) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def test_a_slot_refused_by_the_shared_budget_is_given_back() -> None:
    t = [0.0]

    def sleep(seconds: float) -> None:
        t[0] += seconds

    shared = Refusing(refusals=2)
    limiter = RateLimiter(2, 1.0, margin=0.0, clock=lambda: t[0], sleep=sleep, shared=shared)
    slot = limiter.acquire()
    assert slot == 0.5 and shared.taken == 1  # waited out two refusals of 0.25 s
    # The two refused attempts left nothing behind: one local send, one shared slot.
    assert list(limiter.budget.windows[0].sends) == [0.5]
    assert limiter.acquire() == 0.5 and shared.taken == 2  # the second slot is free


def test_workers_follow_the_limit_unless_set() -> None:
    from lsq_sync.config import LsqConfig
    assert LsqConfig().workers == 25
    assert LsqConfig(rate_limit_calls=2).workers == 2
    assert LsqConfig(rate_limit_calls=500).workers == 32
    assert LsqConfig(rate_limit_calls=500, concurrency=4).workers == 4


def test_a_pair_is_two_slots_at_once_or_a_wait_for_two() -> None:
    t = [0.0]

    def sleep(seconds: float) -> None:
        t[0] += seconds

    limiter = RateLimiter(3, 1.0, margin=0.0, clock=lambda: t[0], sleep=sleep)
    assert limiter.acquire() == 0.0
    t[0] = 0.2
    assert limiter.acquire() == 0.2
    # One slot is free, but a pair needs two: it waits until the send at 0.0 leaves.
    first, second = limiter.acquire_pair()
    assert first == 1.0 and second is not None and 0 < second - first < 1e-5
    assert limiter.try_acquire() is None  # full: never waits
    assert t[0] == 1.0
    limiter.release(second)                  # the write that did not happen
    assert limiter.try_acquire() == 1.0      # its slot is free again at once
    assert limiter.try_acquire() is None


def test_a_pair_under_a_limit_of_one_takes_one_slot() -> None:
    t = [0.0]
    limiter = RateLimiter(1, 1.0, margin=0.0, clock=lambda: t[0], sleep=lambda s: None)
    assert limiter.acquire_pair() == (0.0, None)


def test_a_pair_tells_the_shared_budget_when_each_send_went_or_gives_it_back() -> None:
    t = [0.0]
    shared = Refusing(refusals=0)
    limiter = RateLimiter(4, 1.0, margin=0.0, clock=lambda: t[0], sleep=lambda s: None,
                          shared=shared)
    first, second = limiter.acquire_pair()
    assert second is not None and shared.taken == 2
    limiter.sent(first)
    t[0] = 0.3
    limiter.sent(second)           # the second goes after the first's answer
    assert shared.sent_keys == [0, 1] and list(limiter.budget.windows[0].sends) == [0.0, 0.3]
    limiter.sent(second)           # told once: a retry's trace does not count it again
    assert shared.sent_keys == [0, 1]
    _, spare = limiter.acquire_pair()
    assert spare is not None
    limiter.release(spare)
    assert shared.released == [3] and shared.sent_keys == [0, 1]
    limiter.close()
    assert shared.closed
