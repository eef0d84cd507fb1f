"""Worker threads fed through queues: the API calls of a run, in flight at once."""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from lsq_sync.errors import Stopped

In = TypeVar("In")
Out = TypeVar("Out")


class Workers(Generic[In, Out]):
    """Threads that take items from an inbox and leave results (or exceptions) in an outbox.

    Cheaper per item than an executor's futures, which the GIL makes noticeable at
    thousands of calls per second. Only the caller's thread touches the database.
    """

    def __init__(self, work: Callable[[In], Out], count: int, stop: threading.Event) -> None:
        self.work = work
        self.stop = stop
        self.count = count
        self.inbox: queue.SimpleQueue[In | None] = queue.SimpleQueue()
        self.outbox: queue.SimpleQueue[Out | BaseException] = queue.SimpleQueue()
        self.in_flight = 0
        ctx = contextvars.copy_context()  # so that run_id reaches the workers' log lines
        self.threads = [threading.Thread(target=ctx.copy().run, args=(self._loop,),
                                         name=f"lsq-worker-{i}", daemon=True)
                        for i in range(count)]
        for thread in self.threads:
            thread.start()

    def _loop(self) -> None:
        while (item := self.inbox.get()) is not None:
            try:
                result: Out | BaseException = self.work(item)
            except BaseException as exc:  # handed to the caller's thread, which decides
                result = exc
            self.outbox.put(result)

    def has_room(self) -> bool:
        return self.in_flight < self.count + 2  # a little queued, so no worker idles

    def submit(self, item: In) -> None:
        self.in_flight += 1
        self.inbox.put(item)

    def drop_queued(self) -> int:
        """Take back the items no worker has started; returns how many."""
        dropped = 0
        try:
            while True:
                item = self.inbox.get_nowait()
                if item is None:  # pragma: no cover - close() was called first
                    self.inbox.put(None)
                    break
                dropped += 1
        except queue.Empty:
            pass
        self.in_flight -= dropped
        return dropped

    def results(self, timeout: float) -> list[Out | BaseException]:
        """Whatever finished: waits up to `timeout` for the first one."""
        found: list[Out | BaseException] = []
        try:
            found.append(self.outbox.get(timeout=timeout))
            while True:
                found.append(self.outbox.get_nowait())
        except queue.Empty:
            pass
        self.in_flight -= len(found)
        return found

    def collect(self, timeout: float,
                fatal: type[BaseException] | tuple[type[BaseException], ...]
                ) -> tuple[list[Out], BaseException | None]:
        """Finished results, and the first `fatal` error among them (the run must stop).

        Work abandoned because the run is stopping is dropped; any other error is raised.
        """
        done: list[Out] = []
        first: BaseException | None = None
        for item in self.results(timeout):
            if isinstance(item, fatal):
                first = first or item
            elif isinstance(item, Stopped):
                continue
            elif isinstance(item, BaseException):
                raise item
            else:
                done.append(item)
        return done, first

    def close(self) -> None:
        """Stop the threads; requests under way finish or give up within their timeout."""
        for _ in self.threads:
            self.inbox.put(None)
        for thread in self.threads:
            thread.join(timeout=0.1 if self.stop.is_set() else None)
