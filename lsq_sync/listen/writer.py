"""Group commit for hints: many webhooks, one transaction; each answered once it holds."""

from __future__ import annotations

import queue
import threading
from collections import Counter
from concurrent.futures import Future, InvalidStateError
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from lsq_sync.errors import StoreError
from lsq_sync.logs import Logger
from lsq_sync.store import hints
from lsq_sync.store.db import describe
from lsq_sync.store.types import utcnow

MAX_BATCH = 500      # webhooks per transaction
FLUSH_COUNTS_S = 5.0  # outcomes reach lsq_webhook_outcomes this often

_Item = tuple[list[hints.Hint], datetime, "Future[int]"]


class HintWriter:
    """One thread commits the hints of every waiting webhook together; `submit` returns a
    future that holds the count once committed, or a StoreError. `wake` is set after each
    commit (the puller's cue)."""

    def __init__(self, engine: Engine, log: Logger, wake: threading.Event | None = None
                 ) -> None:
        self.engine = engine
        self.log = log
        self.wake = wake or threading.Event()
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="lsq-hint-writer",
                                        daemon=True)
        self.outcomes: Counter[str] = Counter()
        self._outcomes_lock = threading.Lock()

    def start(self) -> HintWriter:
        self._thread.start()
        return self

    def submit(self, found: list[hints.Hint], received_at: datetime) -> Future[int]:
        future: Future[int] = Future()
        self._queue.put((found, received_at, future))
        return future

    def count(self, outcome: str) -> None:
        """One webhook answered with `outcome` (kept until the next flush)."""
        with self._outcomes_lock:
            self.outcomes[outcome] += 1

    def close(self) -> None:
        """Commit what is queued, write the counts, and stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout=30)
        self._flush_counts()

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            try:
                first = self._queue.get(timeout=FLUSH_COUNTS_S)
            except queue.Empty:
                self._flush_counts()
                continue
            batch: list[_Item] = []
            if first is None:
                stopping = True
            else:
                batch.append(first)
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            if batch:
                self._commit(batch)

    def _commit(self, batch: list[_Item]) -> None:
        try:
            with self.engine.begin() as conn:
                hints.add_many(conn, [(found, at) for found, at, _future in batch])
        except Exception as exc:  # the thread must outlive any batch: it is all webhooks
            error = StoreError(f"cannot record hints: "
                               f"{describe(exc) if isinstance(exc, SQLAlchemyError) else exc}")
            self.log.error("hints_not_recorded", webhooks=len(batch), error=str(error))
            for _found, _at, future in batch:
                _settle(future, error=error)
            return
        for found, _at, future in batch:
            _settle(future, count=len(found))
        self.wake.set()

    def _flush_counts(self) -> None:
        with self._outcomes_lock:
            counts, self.outcomes = dict(self.outcomes), Counter()
        if not counts:
            return
        try:
            hints.count_outcomes(self.engine, counts, utcnow())
        except SQLAlchemyError as exc:
            self.log.warning("webhook_counts_not_written", error=describe(exc))
            with self._outcomes_lock:  # kept for the next flush
                self.outcomes.update(counts)


def _settle(future: Future[int], *, count: int = 0, error: Exception | None = None) -> None:
    """Give a webhook its outcome, unless it stopped waiting (its answer, a 503, is sent:
    the commit timed out, and a hint committed after it only costs a second fetch)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(count)
    except InvalidStateError:
        pass
