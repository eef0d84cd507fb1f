"""The push: claim tasks with pending edits, send one merged Update each, record outcomes."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from lsq_sync import runs
from lsq_sync.client import LsqClient
from lsq_sync.db import describe
from lsq_sync.edits import EDIT_FIELDS, TaskEdits, prepare
from lsq_sync.errors import ApiError, AuthError, RejectedError, StoreError
from lsq_sync.models import edit_claims, sync_runs, task_edits, tasks
from lsq_sync.runs import RunCounts
from lsq_sync.tasks import parse_date
from lsq_sync.types import utcnow
from lsq_sync.upsert import insert_ignore_statement
from lsq_sync.workers import Workers

LEASE = timedelta(minutes=10)
PAGE = 25  # tasks claimed at a time: about one window of the default limit

PENDING = or_(task_edits.c.status.is_(None), task_edits.c.status == "pending")


def pending_pages(engine: Engine, page: int = PAGE) -> Iterator[list[str]]:
    """Task ids with pending edits, oldest first edit first, a page at a time.

    A task left pending in this run (a transient failure) is not offered again, since
    its oldest pending edit is behind the page marker.
    """
    after = 0
    while True:
        with engine.connect() as conn:
            first = func.min(task_edits.c.id).label("first")
            rows = conn.execute(
                select(task_edits.c.task_id, first).where(PENDING)
                .group_by(task_edits.c.task_id).having(first > after)
                .order_by(first).limit(page)).all()
        if not rows:
            return
        yield [row.task_id for row in rows]
        after = rows[-1].first


@dataclass
class Sent:
    task: TaskEdits
    error: ApiError | None = None


class Pusher:
    """One push run. Workers only call the API; this thread does every database write."""

    def __init__(self, *, engine: Engine, client: LsqClient | None, counts: RunCounts,
                 log: Any, notify_by: str, max_edit_attempts: int,
                 stop: threading.Event | None = None) -> None:
        self.engine = engine
        self.client = client
        self.counts = counts
        self.log = log
        self.notify_by = notify_by
        self.max_edit_attempts = max_edit_attempts
        self.stop = stop or threading.Event()
        self.stopped: str | None = None

    # -- reading -------------------------------------------------------------------------

    def load(self, conn: Connection, task_id: str) -> TaskEdits:
        # Only the fields an edit carries: other systems may have put anything in the rest.
        columns = [task_edits.c.id, *(task_edits.c[name] for name in EDIT_FIELDS)]
        rows = conn.execute(select(*columns).where(task_edits.c.task_id == task_id, PENDING)
                            .order_by(task_edits.c.id)).mappings().all()
        task = conn.execute(select(tasks).where(tasks.c.task_id == task_id)).mappings().first()
        return prepare(task_id, [dict(r) for r in rows], dict(task) if task else None,
                       self.notify_by)

    def preview(self, emit: Callable[[str], Any]) -> int:
        """--dry-run: what each task's call would be, changing nothing. Returns task count."""
        import json
        shown = 0
        for page in pending_pages(self.engine):
            with self.engine.connect() as conn:
                for task_id in page:
                    prepared = self.load(conn, task_id)
                    for edit_id, why in prepared.rejected.items():
                        emit(f"edit {edit_id} of task {task_id} would fail: {why}")
                    if prepared.payload is not None:
                        ids = ", ".join(map(str, prepared.ids))
                        emit(f"task {task_id} (edits {ids}): POST /v2/Task.svc/Update "
                             f"{json.dumps(prepared.payload, sort_keys=True)}")
                        shown += 1
        return shown

    # -- claiming ------------------------------------------------------------------------

    def claim(self, run_id: int, task_ids: list[str]) -> list[str]:
        """Take the tasks no live run holds; returns the ones this run now holds."""
        now = utcnow()
        with self.engine.begin() as conn:
            finished = select(sync_runs.c.id).where(sync_runs.c.status != "running")
            conn.execute(delete(edit_claims).where(or_(
                edit_claims.c.claimed_until < now, edit_claims.c.run_id.in_(finished))))
            conn.execute(insert_ignore_statement(conn, edit_claims), [
                {"task_id": t, "run_id": run_id, "claimed_until": now + LEASE}
                for t in task_ids])
            mine = conn.execute(select(edit_claims.c.task_id).where(
                edit_claims.c.run_id == run_id, edit_claims.c.task_id.in_(task_ids))).scalars()
            held = set(mine)
        return [t for t in task_ids if t in held]

    def release(self, conn: Connection, run_id: int, task_id: str | None = None) -> None:
        cond = edit_claims.c.run_id == run_id
        if task_id is not None:
            cond = and_(cond, edit_claims.c.task_id == task_id)
        conn.execute(delete(edit_claims).where(cond))

    # -- sending -------------------------------------------------------------------------

    def _send(self, prepared: TaskEdits) -> Sent:
        assert self.client is not None and prepared.payload is not None
        try:
            self.client.update_task(prepared.payload)
            return Sent(prepared)
        except AuthError:
            raise
        except ApiError as exc:
            return Sent(prepared, exc)

    def run(self, run_id: int) -> RunCounts:
        assert self.client is not None
        workers: Workers[TaskEdits, Sent] = Workers(
            self._send, self.client.cfg.concurrency, self.client.limiter.stop)
        abort: BaseException | None = None
        try:
            for page in pending_pages(self.engine):
                if self._stopping():
                    break
                queue: list[TaskEdits] = []
                for task_id in self.claim(run_id, page):
                    with self.engine.connect() as conn:
                        prepared = self.load(conn, task_id)
                    self._record_rejected(run_id, prepared)
                    if prepared.payload is None:
                        with self.engine.begin() as conn:
                            self.release(conn, run_id, task_id)
                    else:
                        queue.append(prepared)
                while (queue or workers.in_flight) and abort is None:
                    if self._stopping():
                        queue.clear()  # their claims are released below; they stay pending
                    while queue and workers.has_room():
                        workers.submit(queue.pop(0))
                    done, fatal = workers.collect(timeout=0.5, fatal=AuthError)
                    for sent in done:
                        self._record(run_id, sent)
                    if fatal is not None:
                        abort = abort or fatal
                        self.client.limiter.stop.set()
                if abort is not None:
                    break
        finally:
            if abort is not None:
                self.client.limiter.stop.set()
            workers.close()
            try:
                with self.engine.begin() as conn:
                    self.release(conn, run_id)
            except SQLAlchemyError as exc:
                self.log.error("claims_not_released", error=describe(exc))
        if abort is not None:
            raise abort
        return self.counts

    def _stopping(self) -> bool:
        assert self.client is not None
        if self.stopped is None and self.stop.is_set():
            self.stopped = "stopped by a signal; the remaining edits stay pending"
        elif self.stopped is None and self.client.cap_reached.is_set():
            self.stopped = (f"stopped after {self.client.max_calls} API calls (the run's call "
                            f"cap); the remaining edits stay pending")
        return self.stopped is not None

    # -- recording (one transaction per task, so no outcome is lost to another's failure) --

    def _record_rejected(self, run_id: int, prepared: TaskEdits) -> None:
        if not prepared.rejected:
            return
        now = utcnow()
        try:
            with self.engine.begin() as conn:
                for edit_id, why in prepared.rejected.items():
                    conn.execute(update(task_edits).where(task_edits.c.id == edit_id).values(
                        status="failed", last_error=why[:2000]))
                runs.save_counts(conn, run_id, self._bump(edits_failed=len(prepared.rejected)))
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot record edit outcomes: {describe(exc)}") from None
        self._commit_counts(edits_failed=len(prepared.rejected))
        for edit_id, why in prepared.rejected.items():
            self.log.warning("edit_failed", edit_id=edit_id, task_id=prepared.task_id,
                             reason="invalid", error=why, at=now.isoformat())

    def _record(self, run_id: int, sent: Sent) -> None:
        prepared, error = sent.task, sent.error
        now = utcnow()
        ids = prepared.ids
        attempts = func.coalesce(task_edits.c.attempts, 0) + 1
        failed = 0
        try:
            with self.engine.begin() as conn:
                rows = task_edits.c.id.in_(ids)
                if error is None:
                    conn.execute(update(task_edits).where(rows).values(
                        status="sent", sent_at=now, attempts=attempts, last_error=None))
                    self._apply(conn, prepared)
                elif isinstance(error, RejectedError):
                    conn.execute(update(task_edits).where(rows).values(
                        status="failed", attempts=attempts, last_error=self._why(error)))
                    failed = len(ids)
                else:
                    conn.execute(update(task_edits).where(rows).values(
                        attempts=attempts, last_error=self._why(error)))
                    conn.execute(update(task_edits).where(
                        rows, task_edits.c.attempts >= self.max_edit_attempts
                    ).values(status="failed"))
                    failed = conn.execute(select(func.count()).select_from(task_edits).where(
                        rows, task_edits.c.status == "failed")).scalar_one()
                sent_count = len(ids) if error is None else 0
                runs.save_counts(conn, run_id, self._bump(edits_sent=sent_count,
                                                          edits_failed=failed))
                self.release(conn, run_id, prepared.task_id)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot record the outcome of task {prepared.task_id}'s edits: "
                             f"{describe(exc)}") from None
        self._commit_counts(edits_sent=len(ids) if error is None else 0, edits_failed=failed)
        if error is None:
            self.log.info("edits_sent", task_id=prepared.task_id, edit_ids=ids)
        else:
            self.log.warning("edit_failed" if failed else "edit_retry_later",
                             task_id=prepared.task_id, edit_ids=ids,
                             error=type(error).__name__, exception_type=error.exception_type,
                             message=str(error))

    @staticmethod
    def _why(error: ApiError) -> str:
        kind = f"{error.exception_type}: " if error.exception_type else ""
        text = str(error)
        return (text if text.startswith(kind) else kind + text)[:2000]

    @staticmethod
    def _apply(conn: Connection, prepared: TaskEdits) -> None:
        """Lay the sent values over lsq_tasks now; the next pull brings the rest."""
        values = dict(prepared.changes)
        if "due_date" in values:
            values["due_date"] = parse_date(values["due_date"])
        if values:
            conn.execute(update(tasks).where(tasks.c.task_id == prepared.task_id)
                         .values(**values))

    def _bump(self, **more: int) -> RunCounts:
        counts = RunCounts(**self.counts.as_dict())
        for name, value in more.items():
            setattr(counts, name, getattr(counts, name) + value)
        assert self.client is not None
        counts.api_calls = self.client.stats.calls
        counts.throttled = self.client.stats.throttled
        return counts

    def _commit_counts(self, **more: int) -> None:
        for name, value in more.items():
            setattr(self.counts, name, getattr(self.counts, name) + value)


