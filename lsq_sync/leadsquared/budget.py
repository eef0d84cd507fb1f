"""A rate budget shared by every process that uses one API key on one database."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from lsq_sync.errors import StoreError
from lsq_sync.leadsquared.ratelimit import slot_wait
from lsq_sync.store.db import describe
from lsq_sync.store.models import rate_buckets, rate_slots
from lsq_sync.store.upsert import insert_ignore_statement

CLEAN_EVERY = 500  # reservations between deletions of old slots
URGENT_GRACE_S = 0.05  # an urgent taker's claim outlasts its wait by this much
# A prepaid slot is held from its visit until LEASE_S + span later, whether used or not:
# longer wastes the window when the pool lapses unused (the block then halves), shorter
# lets it lapse before a busy process's next call. GUARD_S: a prepaid slot is handed out
# only with this much of its lease left, time for its request to go out.
LEASE_S = 0.2
GUARD_S = 0.02
MAX_BLOCK = 64        # the most slots one visit takes
LATE_S = 0.01         # a send later than its stamp by more is restamped at once


def bucket_for(access_key: str) -> str:
    """A stable name for the key's budget that does not reveal the key."""
    return hashlib.sha256(f"lsq-sync:{access_key}".encode()).hexdigest()[:32]


class SharedSlots:
    """Send slots kept in lsq_rate_slots: an exact sliding window across processes.

    A visit to the database locks the bucket's row (an UPDATE, which every dialect
    serialises), reads the slots still inside the window, and adds rows if the window has
    room. Times are wall-clock seconds, which processes on one machine share; processes on
    several machines need synchronised clocks (NTP), and the margin absorbs the rest.

    Slots are taken in blocks where the window has room, so that a fast pull pays one
    transaction per block rather than per call: the slots asked for are stamped now, the
    block's others ("prepaid") now + LEASE_S, which holds each of them in every process's
    window from now until LEASE_S + span later, so any send made within the lease is
    inside what the row holds. A prepaid slot not used within its lease is deleted. Each
    send's real time is written back at the next visit (earlier than the stamp: the
    window frees sooner), or at once when it went out later than its row said (then the
    row would free its place too early).
    """

    def __init__(self, engine: Engine, bucket: str, calls: int, period: float, margin: float,
                 clock: Callable[[], float] = time.time, *, urgent: bool = False,
                 late_s: float = LATE_S) -> None:
        self.engine = engine
        # Urgent (listen's hinted leads): a change is known to wait there. An urgent taker
        # that finds the window full says until when it waits (rate_buckets.urgent_until),
        # and the others leave the freed slots to it until then.
        self.urgent = urgent
        self.bucket = bucket
        self.calls = calls
        self.period = period
        self.span = period + margin
        self.clock = clock
        self.late_s = late_s  # a send this much later than its stamp is restamped at once
        self.visits = 0       # transactions that took slots (bench and tests read it)
        self._lock = threading.Lock()
        self._count = 0
        self._block = 1                                  # slots to take at the next visit
        self._visited = float("-inf")                    # when the last visit took slots
        self._pool: deque[tuple[int, float]] = deque()   # prepaid (key, stamp), in order
        self._out: dict[int, float] = {}                 # handed out, not sent: key -> stamp
        self._settle: dict[int, float] = {}              # sent earlier than stamped
        self._drop: list[int] = []                       # prepaid, lapsed unused
        try:
            with engine.begin() as conn:
                conn.execute(insert_ignore_statement(conn, rate_buckets),
                             [{"bucket": bucket, "touched": clock()}])
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot set up the shared rate budget: {describe(exc)}") from None

    def tighten(self, calls: int, period: float) -> None:
        """Obey a lower limit the API stated, in the shared window too."""
        margin = self.span - self.period
        if calls / period < self.calls / self.period:
            self.calls, self.period, self.span = calls, period, period + margin
            with self._lock:
                self._lapse(float("inf"))  # the pool was taken under the old limit

    def _window(self, conn: Any, now: float) -> list[float]:
        return list(conn.execute(
            select(rate_slots.c.sent_at)
            .where(rate_slots.c.bucket == self.bucket, rate_slots.c.sent_at > now - self.span)
            .order_by(rate_slots.c.sent_at)).scalars())

    def _wait(self, sends: list[float], now: float, n: int) -> float:
        return float(slot_wait(sends, self.calls, self.span, now, n))

    def _yield_to_urgent(self, conn: Any, now: float) -> float:
        """How long a non-urgent taker leaves the window to a waiting urgent one."""
        if self.urgent:
            return 0.0
        until = conn.execute(select(rate_buckets.c.urgent_until).where(
            rate_buckets.c.bucket == self.bucket)).scalar()
        return max(0.0, float(until) - now) if until else 0.0

    def _claim(self, conn: Any, wait: float, now: float) -> None:
        """An urgent taker must wait `wait`: the slots freed meanwhile are its. On `conn`,
        in the caller's transaction (another one would wait for the bucket's row lock that
        the caller's own transaction holds)."""
        until = now + wait + URGENT_GRACE_S
        conn.execute(update(rate_buckets).where(
            rate_buckets.c.bucket == self.bucket,
            (rate_buckets.c.urgent_until.is_(None))
            | (rate_buckets.c.urgent_until < until)).values(urgent_until=until))

    def _lapse(self, now: float) -> bool:
        """Move the prepaid slots whose lease is (nearly) over to the deletions; returns
        whether any lapsed."""
        lapsed = False
        while self._pool and self._pool[0][1] - now < GUARD_S:
            self._drop.append(self._pool.popleft()[0])
            lapsed = True
        return lapsed

    def _hand_out(self, n: int) -> list[int]:
        keys = []
        for _ in range(n):
            key, stamp = self._pool.popleft()
            self._out[key] = stamp
            keys.append(key)
        return keys

    def _tidy(self, conn: Any) -> None:
        """Write back what this process learnt since its last visit (the caller forgets
        it once the transaction has committed)."""
        if self._drop:
            conn.execute(delete(rate_slots).where(rate_slots.c.id.in_(self._drop)))
        if self._settle:
            conn.execute(update(rate_slots).where(rate_slots.c.id == bindparam("key"))
                         .values(sent_at=bindparam("at")),
                         [{"key": k, "at": at} for k, at in self._settle.items()])

    def reserve(self, n: int = 1) -> tuple[float, list[int]]:
        """Take `n` slots now and return (0, their rows' keys), or return how long to wait
        before trying again (and no keys)."""
        try:
            with self._lock:
                now = self.clock()
                if self._lapse(now):
                    self._block = max(1, self._block // 2)  # more was taken than used
                if len(self._pool) >= n:
                    return 0.0, self._hand_out(n)
                need = n - len(self._pool)  # what is prepaid goes first
                if not self._drop and not self._settle:
                    # A read first: while the window is full, waiting needs no write lock
                    # (on SQLite the one writer is also busy with the run's own batches).
                    with self.engine.connect() as conn:
                        wait = self._yield_to_urgent(conn, now) or self._wait(
                            self._window(conn, now), now, need)
                    if wait > 0:
                        if self.urgent:
                            with self.engine.begin() as conn:
                                self._claim(conn, wait, now)
                        return wait, []
                now = self.clock()
                wait, fresh = self._visit(now, need)
                # Only now, the transaction committed: a row it inserted and rolled back
                # must never be handed out, and what it wrote back is written.
                self._drop, self._settle = [], {}
                if wait > 0:
                    return wait, []
                self._pool.extend(fresh)
                # Back within a lease: calls come faster than one visit each, so the next
                # block is larger; a slower taker keeps taking one slot a visit, and never
                # holds a slot it will not use.
                fast = now - self._visited < LEASE_S
                self._block = min(MAX_BLOCK, self._block * 2) if fast else 1
                self._visited = now
                self.visits += 1
                # The leftover prepaid slots and those stamped now are the first n.
                return 0.0, self._hand_out(n)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot reserve a send slot: {describe(exc)}") from None

    def _visit(self, now: float, need: int) -> tuple[float, list[tuple[int, float]]]:
        """One transaction: write back what this process learnt, then take `need` slots
        and a block of prepaid ones if the window has room (else say how long to wait)."""
        with self.engine.begin() as conn:
            conn.execute(update(rate_buckets).where(
                rate_buckets.c.bucket == self.bucket).values(touched=now))
            self._tidy(conn)
            window = self._window(conn, now)  # again, locked
            wait = self._yield_to_urgent(conn, now) or self._wait(window, now, need)
            if wait > 0:
                if self.urgent:
                    self._claim(conn, wait, now)
                return wait, []
            fresh = []
            for i in range(max(need, min(self._block, self.calls - len(window)))):
                stamp = now if i < need else now + LEASE_S
                key = conn.execute(insert(rate_slots).values(
                    bucket=self.bucket, sent_at=stamp)).inserted_primary_key
                fresh.append((int(key[0]) if key else 0, stamp))
            self._count += 1
            if self._count % CLEAN_EVERY == 1:
                conn.execute(delete(rate_slots).where(
                    rate_slots.c.bucket == self.bucket,
                    rate_slots.c.sent_at < now - 2 * self.span))
        return 0.0, fresh

    def sent(self, key: int) -> None:
        """The send of slot `key` goes out now: count it from now.

        Later than its stamp (beyond `late_s`): written at once, since the row would leave
        the window before the send does. Earlier (a prepaid slot): written at the next
        visit, which only frees the window sooner."""
        with self._lock:
            stamp = self._out.pop(key, None)
            if stamp is None:
                return
            now = self.clock()
            if now <= stamp:
                if stamp - now > self.late_s:
                    self._settle[key] = now
                return
            if now - stamp <= self.late_s:
                return
        self._change(update(rate_slots).where(rate_slots.c.id == key).values(sent_at=now))

    def release(self, keys: Sequence[int]) -> None:
        """Give back slots whose requests will not be sent: prepaid ones whose lease
        still runs go back to the pool, the others are deleted at once."""
        gone = []
        with self._lock:
            now = self.clock()
            for key in keys:
                stamp = self._out.pop(key, None)
                if stamp is not None and stamp - now >= GUARD_S and stamp > now:
                    self._pool.append((key, stamp))
                else:
                    gone.append(key)
            self._pool = deque(sorted(self._pool, key=lambda p: p[1]))
        if gone:
            self._change(delete(rate_slots).where(rate_slots.c.id.in_(gone)))

    def close(self) -> None:
        """Give back the prepaid slots and write the sends' real times (end of a run)."""
        with self._lock:
            self._lapse(float("inf"))
            if not self._drop and not self._settle:
                return
            try:
                with self.engine.begin() as conn:
                    self._tidy(conn)
            except SQLAlchemyError:
                pass  # the rows only hold their places longer; they lapse on their own
            self._drop, self._settle = [], {}

    def _change(self, statement: Any) -> None:
        try:
            with self._lock, self.engine.begin() as conn:
                conn.execute(statement)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot update a send slot: {describe(exc)}") from None
