"""What every thread of a run shares: its one stop control, and its call counts and cap."""

from __future__ import annotations

import threading
from enum import StrEnum

from lsq_sync.errors import CapReached


class StopReason(StrEnum):
    SIGNAL = "signal"        # SIGINT / SIGTERM: finish what is in flight, then stop
    CALL_CAP = "call_cap"    # [lsq].max_calls_per_run used up: a planned stop
    DAILY_CAP = "daily_cap"  # [lsq].max_calls_per_day used up until UTC midnight: planned
    FATAL = "fatal"          # 401, an unreachable host, a database that fails: stop at once


class Stop(threading.Event):
    """The run's one stop switch, with the first reason it was set for. Every wait of a
    run (a slot, a backoff, the workers) ends when it is set, so a stop never waits out a
    sleep."""

    def __init__(self) -> None:
        super().__init__()
        self.reason: StopReason | None = None
        self._asked: set[StopReason] = set()
        self._reason_lock = threading.Lock()

    def set(self, reason: StopReason = StopReason.SIGNAL) -> None:
        with self._reason_lock:
            self._asked.add(reason)
            if self.reason is None:
                self.reason = reason
        super().set()

    def forgive_fatal(self) -> bool:
        """Undo a FATAL stop nothing else asked for (a long run that outlives a database
        outage); returns whether the stop is now clear. A signal or cap that came after
        it still stops."""
        with self._reason_lock:
            self._asked.discard(StopReason.FATAL)
            if self.reason != StopReason.FATAL:
                return not self.is_set()
            others = [r for r in StopReason if r in self._asked]
            if others:
                self.reason = others[0]
                return False
            self.reason = None
            super().clear()
            return True


class Stats:
    """The API calls of a run, counted by every thread; with a cap, the call past it is
    refused (CapReached) and the run's stop is set."""

    def __init__(self, cap: int | None = None, stop: Stop | None = None,
                 cap_reason: StopReason = StopReason.CALL_CAP) -> None:
        self._lock = threading.Lock()
        self.cap = cap
        self.cap_reason = cap_reason  # which cap `cap` is
        self.stop = stop
        self.calls = 0
        self.throttled = 0
        self.retries = 0
        self.unreachable = 0  # connection failures in a row, reset by any answer

    def take_call(self) -> None:
        """Count one more call, or raise CapReached if the cap's calls were made."""
        with self._lock:
            if self.cap is None or self.calls < self.cap:
                self.calls += 1
                return
        if self.stop is not None:
            self.stop.set(self.cap_reason)
        raise CapReached

    def connection(self, ok: bool) -> int:
        """Record whether a request reached the host; returns the failures in a row."""
        with self._lock:
            self.unreachable = 0 if ok else self.unreachable + 1
            return self.unreachable

    def add(self, *, throttled: int = 0, retries: int = 0) -> None:
        with self._lock:
            self.throttled += throttled
            self.retries += retries
