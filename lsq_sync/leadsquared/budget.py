"""A rate budget shared by every process that uses one API key on one database."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from lsq_sync.errors import StoreError
from lsq_sync.leadsquared.ratelimit import slot_wait
from lsq_sync.store.db import describe
from lsq_sync.store.models import rate_buckets, rate_slots
from lsq_sync.store.upsert import insert_ignore_statement

CLEAN_EVERY = 500  # reservations between deletions of old slots
URGENT_GRACE_S = 0.05  # an urgent taker's claim outlasts its wait by this much


def bucket_for(access_key: str) -> str:
    """A stable name for the key's budget that does not reveal the key."""
    return hashlib.sha256(f"lsq-sync:{access_key}".encode()).hexdigest()[:32]


class SharedSlots:
    """Send slots kept in lsq_rate_slots: an exact sliding window across processes.

    A reservation locks the bucket's row (an UPDATE, which every dialect serialises),
    reads the slots still inside the window, and adds one if the window has room. Times
    are wall-clock seconds, which processes on one machine share; processes on several
    machines need synchronised clocks (NTP), and the margin absorbs the rest.
    """

    def __init__(self, engine: Engine, bucket: str, calls: int, period: float, margin: float,
                 clock: Callable[[], float] = time.time, *, urgent: bool = False) -> None:
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
        self._lock = threading.Lock()
        self._count = 0
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

    def _claim(self, wait: float, now: float) -> None:
        """An urgent taker must wait `wait`: the slots freed meanwhile are its."""
        until = now + wait + URGENT_GRACE_S
        with self.engine.begin() as conn:
            conn.execute(update(rate_buckets).where(
                rate_buckets.c.bucket == self.bucket,
                (rate_buckets.c.urgent_until.is_(None))
                | (rate_buckets.c.urgent_until < until)).values(urgent_until=until))

    def reserve(self, n: int = 1) -> tuple[float, list[int]]:
        """Take `n` slots now and return (0, their rows' keys), or return how long to wait
        before trying again (and no keys)."""
        try:
            with self._lock:
                # A read first: while the window is full, waiting needs no write lock (on
                # SQLite the one writer is also busy with the run's own batches).
                with self.engine.connect() as conn:
                    now = self.clock()
                    wait = self._yield_to_urgent(conn, now) or self._wait(
                        self._window(conn, now), now, n)
                if wait > 0:
                    if self.urgent:
                        self._claim(wait, now)
                    return wait, []
                with self.engine.begin() as conn:
                    now = self.clock()
                    conn.execute(update(rate_buckets).where(
                        rate_buckets.c.bucket == self.bucket).values(touched=now))
                    wait = self._yield_to_urgent(conn, now) or self._wait(
                        self._window(conn, now), now, n)  # again, locked
                    if wait > 0:
                        return wait, []
                    keys = []
                    for _ in range(n):
                        key = conn.execute(insert(rate_slots).values(
                            bucket=self.bucket, sent_at=now)).inserted_primary_key
                        keys.append(int(key[0]) if key else 0)
                    self._count += 1
                    if self._count % CLEAN_EVERY == 1:
                        conn.execute(delete(rate_slots).where(
                            rate_slots.c.bucket == self.bucket,
                            rate_slots.c.sent_at < now - 2 * self.span))
                    return 0.0, keys
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot reserve a send slot: {describe(exc)}") from None

    def restamp(self, key: int) -> None:
        """The send of slot `key` goes out now (later than reserved): count it from now.

        Until this moment it counted from its reservation, which is earlier, so no other
        process could take its place in the meantime (the delay is one answer's time, far
        less than the window)."""
        self._change(update(rate_slots).where(rate_slots.c.id == key)
                     .values(sent_at=self.clock()))

    def release(self, keys: Sequence[int]) -> None:
        """Give back slots whose requests will not be sent."""
        if keys:
            self._change(delete(rate_slots).where(rate_slots.c.id.in_(list(keys))))

    def _change(self, statement: Any) -> None:
        try:
            with self._lock, self.engine.begin() as conn:
                conn.execute(statement)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot update a send slot: {describe(exc)}") from None
