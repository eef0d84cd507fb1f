"""An exact sliding-window rate limiter over request send times, shared by all threads."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

from lsq_sync.errors import Stopped

# The server counts arrivals, we count sends (stamped when the request's headers start to
# go out); the gap between the two varies from request to request by the jitter of the
# one-way latency and of the server's own scheduling. Each send holds its slot `margin`
# longer than the period: more wastes the budget (a short run's span grows by it once per
# window, a long run uses period / (period + margin) of the limit), less invites a
# throttle, and one refused call pushes a short run's last call into another window (5 s).
# Measured on loopback against the simulator at 25 / 5 s with a window's 25 requests in
# flight at once: 0.04 s gave no throttle in any run (short runs 0.977 of the ideal span,
# a long run 0.991 of the limit); 0.03 s let one through in four short runs while the
# workers' start-up still crowded the CPU. A throttle answer doubles it
# (Budget.widen_margin), so a jittery network teaches its own.
DEFAULT_MARGIN_S = 0.04
GROUP_STEP = 1e-6  # between the slots of one reservation of several (see Budget.group)


def slot_wait(sends: Sequence[float], calls: int, span: float, now: float, n: int = 1
              ) -> float:
    """Seconds until `n` more sends fit at once among `sends` (in order, the last `span`
    seconds'), at most `calls` of them per `span`; 0 if they fit now."""
    if len(sends) + n <= calls:
        return 0.0
    # The send that must leave the window before `n` more fit.
    return sends[len(sends) + n - 1 - calls] + span - now


class Window:
    """At most `calls` sends in any `period` seconds (each send holds [t, t+period+margin))."""

    __slots__ = ("calls", "margin", "period", "sends")

    def __init__(self, calls: int, period: float, margin: float = 0.0) -> None:
        if calls < 1 or period <= 0:
            raise ValueError("a window needs calls >= 1 and period > 0")
        self.calls = calls
        self.period = period
        self.margin = margin
        self.sends: deque[float] = deque()

    @property
    def span(self) -> float:
        return self.period + self.margin

    def delay(self, now: float, n: int = 1) -> float:
        """Seconds until `n` sends at `now` would fit; 0 if they fit now."""
        sends = self.sends
        while sends and sends[0] + self.span <= now:
            sends.popleft()
        return slot_wait(sends, self.calls, self.span, now, n)

    def record(self, now: float) -> None:
        self.sends.append(now)

    def remove(self, at: float) -> bool:
        """Forget the send at `at`; False if it has left the window already."""
        sends = self.sends
        for i in range(len(sends) - 1, -1, -1):
            if sends[i] == at:
                del sends[i]
                return True
        return False

    def restamp(self, old: float, new: float) -> None:
        """Move one send from `old` to the later `new`, keeping the sends in order."""
        if not self.remove(old):
            return
        sends = self.sends
        i = len(sends)
        while i > 0 and sends[i - 1] > new:
            i -= 1
        sends.insert(i, new)


class Budget:
    """Several windows at once (the configured one and any limit the API stated).

    Pure and clock-free: callers pass `now`, so tests drive it with any clock.
    """

    def __init__(self, calls: int, period: float, margin: float = DEFAULT_MARGIN_S) -> None:
        self.margin = margin
        self.windows = [Window(calls, period, margin)]
        self.blocked_until = 0.0
        self._last = float("-inf")

    def _now(self, now: float) -> float:
        # Sends are kept in order (delay() and restamp() rely on it): after the clock
        # steps back, time stands still for the budget until the clock catches up.
        self._last = max(self._last, now)
        return self._last

    def delay(self, now: float, n: int = 1) -> float:
        now = self._now(now)
        wait = max(0.0, self.blocked_until - now)
        for window in self.windows:
            wait = max(wait, window.delay(now, n))
        return wait

    @property
    def most(self) -> int:
        """The most sends that can ever be reserved at once."""
        return min(w.calls for w in self.windows)

    def reserve(self, now: float, n: int = 1) -> float:
        """Take `n` slots at `now` and return 0, or return how long to wait first."""
        wait = self.delay(now, n)
        if wait > 0:
            return wait
        for window in self.windows:
            for slot in self.group(n):
                window.record(slot)
        return 0.0

    def group(self, n: int) -> list[float]:
        """The slots of the last reservation of `n`: its time, and a microsecond apart for
        each later one, so that each slot of a group can be told apart."""
        return [self._last + i * GROUP_STEP for i in range(n)]

    def release(self, slot: float) -> None:
        """Give back the slot reserved at `slot`: that send will not happen."""
        for window in self.windows:
            window.remove(slot)

    def restamp(self, old: float, new: float) -> None:
        """The send reserved at `old` really left at `new` (later): count it from then."""
        new = self._now(new)
        if new > old:
            for window in self.windows:
                window.restamp(old, new)

    def add_limit(self, calls: int, period: float) -> bool:
        """Also obey `calls` per `period` (a limit the API stated); True if it is new."""
        for window in self.windows:
            if window.period >= period and window.calls <= calls:
                return False  # already at least as strict
        window = Window(calls, period, self.margin)
        # Carry the recent sends over, so the new window starts from the truth.
        for w in self.windows:
            if len(w.sends) > len(window.sends):
                window.sends = deque(w.sends)
        self.windows.append(window)
        return True

    def widen_margin(self, most: float) -> None:
        """Hold each slot a little longer (arrival jitter made the server count more)."""
        self.margin = min(most, self.margin * 2 if self.margin else 0.01)
        for window in self.windows:
            window.margin = self.margin

    def pause(self, now: float, seconds: float) -> None:
        """Send nothing for `seconds` (after a throttle answer: let the window drain)."""
        self.blocked_until = max(self.blocked_until, self._now(now) + seconds)

    @property
    def rate(self) -> float:
        return min(w.calls / w.period for w in self.windows)


class Shared(Protocol):
    """A budget other processes draw on too (see budget.py)."""

    def reserve(self, n: int = 1) -> tuple[float, list[int]]: ...

    def sent(self, key: int) -> None: ...

    def release(self, keys: Sequence[int]) -> None: ...

    def tighten(self, calls: int, period: float) -> None: ...

    def close(self) -> None: ...



class RateLimiter:
    """A thread-safe blocking front for `Budget`."""

    def __init__(self, calls: int, period: float, *, margin: float = DEFAULT_MARGIN_S,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] | None = None,
                 stop: threading.Event | None = None,
                 shared: Shared | None = None) -> None:
        self.budget = Budget(calls, period, margin)
        self.shared = shared
        self.streak = 0            # throttle answers in a row, for the pause length
        self._last_throttle = float("-inf")
        self.clock = clock
        self.stop = stop or threading.Event()
        self._sleep = sleep
        self._lock = threading.Lock()
        self._held: dict[float, int] = {}  # slots not yet sent -> their shared rows

    def wait(self, seconds: float) -> None:
        """Sleep, unless the run is stopping: then raise Stopped."""
        if self._sleep is not None:
            self._sleep(seconds)
            if self.stop.is_set():
                raise Stopped
        elif self.stop.wait(seconds):
            raise Stopped

    def acquire(self) -> float:
        """Block until a request may be sent, and count it as sent; returns the slot."""
        return self._take(1, block=True)[0]

    def acquire_pair(self) -> tuple[float, float | None]:
        """Block until two requests may be sent back to back (a read, then the write that
        relies on it) and count both; the second slot is None when the limit allows only
        one send per window, so that the second must wait its turn."""
        if self.budget.most < 2:
            return self.acquire(), None
        first, second = self._take(2, block=True)
        return first, second

    def try_acquire(self) -> float | None:
        """A slot if one is free right now, else None (never waits)."""
        taken = self._take(1, block=False)
        return taken[0] if taken else None

    def _take(self, n: int, *, block: bool) -> list[float]:
        while True:
            with self._lock:
                wait = self.budget.reserve(self.clock(), n)
                slots = self.budget.group(n)
            if wait > 0:
                if not block:
                    return []
                self.wait(wait)
                continue
            if self.shared is None:
                return slots
            # The local slots are held while the shared budget (the other processes' sends)
            # is asked: a shared slot is then never taken for a send that does not happen,
            # which would leave a hole in the window of every process.
            wait, keys = self.shared.reserve(n)
            if wait <= 0:
                # Each send tells the shared budget when it really went (see sent()): the
                # later sends of a group leave only after the first one's answer.
                with self._lock:
                    self._held.update(zip(slots, keys, strict=True))
                return slots
            with self._lock:
                for slot in slots:
                    self.budget.release(slot)
            if not block:
                return []
            self.wait(wait)

    def release(self, slot: float) -> None:
        """Give back a slot whose request will not be sent."""
        with self._lock:
            self.budget.release(slot)
            key = self._held.pop(slot, None)
        if key is not None and self.shared is not None:
            self.shared.release([key])

    def sent(self, slot: float) -> None:
        """The request of `slot` is going out only now (after connecting): move its slot.

        Moving a slot later only makes the window stricter, so the reservation made
        before the send keeps bursts out and this keeps arrivals apart.
        """
        with self._lock:
            self.budget.restamp(slot, self.clock())
            key = self._held.pop(slot, None)
        if key is not None and self.shared is not None:
            self.shared.sent(key)

    def throttled(self, calls: int | None, period: float | None) -> bool:
        """Record a throttle answer; returns True when the stated limit is new to us.

        The pause starts at one slot's worth of time and doubles with each throttle that
        follows within a period, up to a whole period: a stray throttle from arrival
        jitter costs little, while a budget taken by another integration is left alone.
        """
        with self._lock:
            now = self.clock()
            new = False
            if calls and period:
                new = self.budget.add_limit(calls, period)
                if self.shared is not None:
                    self.shared.tighten(calls, period)
            longest = max(w.period for w in self.budget.windows)
            if now - self._last_throttle > longest:
                self.streak = 0
            self.streak += 1
            self._last_throttle = now
            slot = 1 / self.budget.rate
            self.budget.pause(now, min(longest, slot * 2 ** (self.streak - 1)))
            self.budget.widen_margin(most=longest * 0.05)
            return new

    @property
    def rate(self) -> float:
        return self.budget.rate

    def close(self) -> None:
        """The run is over: give back the shared slots it prepaid and did not use."""
        if self.shared is not None:
            self.shared.close()
