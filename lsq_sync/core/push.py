"""The push: claim tasks with pending edits, read each lead again, merge, send, record."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from lsq_sync.core.merge import LANDING, Plan, TaskEdits, plan, prepare
from lsq_sync.core.run import Run, Tx
from lsq_sync.errors import ApiError, FatalError, RejectedError, Stopped, StoreError
from lsq_sync.leadsquared.client import LsqClient
from lsq_sync.leadsquared.fields import BY_COLUMN, OWNER
from lsq_sync.leadsquared.tasks import parse_date
from lsq_sync.states import EditStatus, OnConflict
from lsq_sync.store import edit_queue, leases
from lsq_sync.store.db import describe, retry_conflicts
from lsq_sync.store.tasks import LeadOutcome, overlay, raw_hash, record_history, write_batch
from lsq_sync.store.types import utcnow

if TYPE_CHECKING:
    from lsq_sync.logs import Logger


@dataclass(frozen=True)
class WouldFail:
    """Dry run: an edit that fails its checks."""

    edit_id: int
    task_id: str
    why: str


@dataclass(frozen=True)
class Unreadable:
    """Dry run: tasks whose current state cannot be read (the lead's, or one task's)."""

    task_ids: tuple[str, ...]
    why: str
    lead_id: str | None = None  # the whole lead could not be read


Preview = WouldFail | Unreadable | Plan  # what a dry run finds, for the CLI to word


@dataclass
class Sent:
    """One task's plan, and what the API said to its Update (if one was sent)."""

    task: TaskEdits
    plan: Plan
    remote: Mapping[str, Any] | None = None   # the task as just read
    error: ApiError | None = None
    read: int = 0  # which read of its lead it relied on (LeadPush.reads)


@dataclass
class LeadPush:
    """The work and outcome of one lead: one read, then an Update per task that needs one."""

    lead_id: str
    tasks: list[TaskEdits]
    rows: list[dict[str, Any]] | None = None   # what the read returned
    bad: dict[str, str] = field(default_factory=dict)  # tasks the read could not parse
    read_error: ApiError | None = None
    unread: list[TaskEdits] | None = None  # the tasks read_error holds back (None: all)
    done: list[Sent] = field(default_factory=list)
    untried: list[TaskEdits] = field(default_factory=list)  # the run stopped first
    fatal: FatalError | None = None
    reads: int = 0          # reads of the lead so far; `rows` are the last one's
    read_at: float = 0.0    # when the last read answered (time.monotonic)
    sent_at: datetime | None = None  # when the last read was sent (UTC: orders fetches)


class Pusher:
    """The push part of a run (or its preview). Workers only call the API; the run's
    thread does every database write."""

    def __init__(self, *, engine: Engine, client: LsqClient | None, log: Logger,
                 notify_by: str, max_edit_attempts: int, on_conflict: OnConflict = "skip",
                 history: bool = False, max_read_age_s: float = 2.0) -> None:
        self.engine = engine
        self.client = client
        self.log = log
        self.notify_by = notify_by
        self.max_edit_attempts = max_edit_attempts
        self.on_conflict = on_conflict
        self.history = history
        self.max_read_age_s = max_read_age_s
        self._run: Run | None = None

    @property
    def run(self) -> Run:
        assert self._run is not None, "only push() records"
        return self._run

    # -- reading -------------------------------------------------------------------------

    def load(self, conn: Connection, task_id: str) -> TaskEdits:
        found = edit_queue.load_pending(conn, task_id, LANDING)
        return prepare(task_id, found.rows, found.task, found.landed)

    def settle_statuses(self) -> int:
        """Statuses other systems wrote that mean nothing are marked failed (see
        edit_queue.settle_statuses). Returns how many."""
        run_id = self.run.id

        def settle(tx: Tx) -> int:
            failed = edit_queue.settle_statuses(tx.conn, run_id)
            tx.add(edits_failed=failed)
            return failed

        try:
            failed = self.run.write(settle)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read the edit queue: {describe(exc)}") from None
        if failed:
            self.log.warning("edits_with_unknown_status", edits=failed,
                             action="marked failed; set status to NULL or 'pending' to send")
        return failed

    def _prepare_page(self, run_id: int | None, task_ids: list[str]) -> list[TaskEdits]:
        with self.engine.connect() as conn:
            prepared = [self.load(conn, task_id) for task_id in task_ids]
        if run_id is not None:  # a preview records nothing
            edit_queue.record_bases(self.engine, {i: b for p in prepared
                                                  for i, b in p.new_bases.items()})
        return prepared

    @staticmethod
    def by_lead(prepared: list[TaskEdits]) -> dict[str, list[TaskEdits]]:
        groups: dict[str, list[TaskEdits]] = {}
        for item in prepared:
            if item.edits and item.lead_id is not None:
                groups.setdefault(item.lead_id, []).append(item)
        return groups

    # -- preview -------------------------------------------------------------------------

    def preview(self, emit: Callable[[Preview], Any]) -> int:
        """push --dry-run: each task's merge and the call it would make; with a client it
        reads every lead from the API first, without one (--offline) it merges against the
        synced state. Changes nothing. Returns how many Update calls would be sent."""
        would_send = 0
        for page in edit_queue.pending_pages(self.engine):
            prepared = self._prepare_page(None, page)
            for item in prepared:
                for edit_id, why in item.rejected.items():
                    emit(WouldFail(edit_id, item.task_id, why))
            for lead_id, items in self.by_lead(prepared).items():
                if self.client is None:
                    remote = {i.task_id: i.synced for i in items if i.synced is not None}
                else:
                    try:
                        found = self.client.retrieve_task_list(lead_id)
                    except FatalError:
                        raise
                    except ApiError as exc:
                        emit(Unreadable(tuple(i.task_id for i in items), str(exc), lead_id))
                        continue
                    remote = {row["task_id"]: row for row in found.rows}
                    for item in (i for i in items if i.task_id in found.bad):
                        emit(Unreadable((item.task_id,), found.bad[item.task_id]))
                    items = [i for i in items if i.task_id not in found.bad]
                for item in items:
                    decided = plan(item, remote.get(item.task_id), self.notify_by,
                                   self.on_conflict)
                    would_send += decided.outcome == "send"
                    emit(decided)
        return would_send

    # -- claiming (store/leases.py holds the claims) --------------------------------------

    def claim(self, run_id: int, task_ids: list[str]) -> list[str]:
        """Take the tasks no live run holds; returns the ones this run now holds."""
        return leases.claim_tasks(self.engine, run_id, task_ids)

    @staticmethod
    def release(conn: Connection, run_id: int, task_id: str | None = None) -> None:
        leases.release_tasks(conn, run_id, task_id)

    # -- sending (worker threads) --------------------------------------------------------

    def _push_lead(self, job: LeadPush) -> LeadPush:
        """Read the lead's tasks, merge each task's edits with what the CRM holds now, and
        send the Updates that are needed. Nothing is sent on a read older than
        max_read_age_s: the task is read again, back to back with its Update."""
        assert self.client is not None
        spare: list[float] = []  # a slot reserved with the last read, for an Update at once
        try:
            return self._send_lead(job, spare)
        finally:
            for slot in spare:
                self.client.release(slot)

    def _read(self, job: LeadPush, spare: list[float]) -> dict[str, dict[str, Any]]:
        """Read the lead with two slots at once: the first Update can follow the read
        without waiting for a slot. Returns the tasks as read, by id."""
        assert self.client is not None
        for slot in spare:
            self.client.release(slot)
        spare.clear()
        first, second = self.client.reserve_pair()
        if second is not None:
            spare.append(second)
        found = self.client.retrieve_task_list(job.lead_id, slot=first)
        job.reads += 1
        job.read_at = time.monotonic()
        # A task the read cannot parse holds back its own edits, not its neighbours'.
        job.rows, job.bad, job.sent_at = found.rows, found.bad, found.sent_at
        return {row["task_id"]: row for row in found.rows}

    def _slot_for_update(self, job: LeadPush, spare: list[float]) -> float | None:
        """A slot to send an Update on the last read at once, or None when that read is
        too old (or no slot is free now)."""
        assert self.client is not None
        if time.monotonic() - job.read_at > self.max_read_age_s:
            return None
        return spare.pop() if spare else self.client.try_reserve()

    def _send_lead(self, job: LeadPush, spare: list[float]) -> LeadPush:
        assert self.client is not None
        try:
            remote = self._read(job, spare)
        except Stopped:
            job.untried = list(job.tasks)
            return job
        except FatalError:
            raise
        except ApiError as exc:
            job.read_error = exc
            return job
        for i, item in enumerate(job.tasks):
            sending = False  # an ApiError before the Update is the read's
            try:
                decided = self._plan(job, item, remote)
                if decided is None or decided.outcome != "send":
                    continue
                slot = self._slot_for_update(job, spare)
                if slot is None:
                    # Never write on a read that has aged: read the task again, and send
                    # its Update right behind the read.
                    remote = self._read(job, spare)
                    decided = self._plan(job, item, remote)
                    if decided is None or decided.outcome != "send":
                        continue
                    slot = spare.pop() if spare else None
                assert decided.payload is not None
                sending = True
                self.client.update_task(decided.payload, slot=slot)
                job.done.append(Sent(item, decided, remote.get(item.task_id), read=job.reads))
            except Stopped:
                job.untried = job.tasks[i:]
                break
            except FatalError as exc:
                job.fatal = exc
                job.untried = job.tasks[i:]
                break
            except ApiError as exc:
                if not sending:  # the read again failed: this task and the rest wait
                    job.read_error = exc
                    job.unread = job.tasks[i:]
                    break
                assert decided is not None  # sending: it was planned
                job.done.append(Sent(item, decided, remote.get(item.task_id), exc,
                                     read=job.reads))
        self._learn_owners(job, spare)
        return job

    def _plan(self, job: LeadPush, item: TaskEdits, remote: dict[str, dict[str, Any]]
              ) -> Plan | None:
        """The task's merge with what was just read; a plan that sends nothing is done
        here. None: the read could not parse the task (its edits wait)."""
        if item.task_id in job.bad:
            return None
        decided = plan(item, remote.get(item.task_id), self.notify_by, self.on_conflict)
        if decided.outcome != "send":
            job.done.append(Sent(item, decided, remote.get(item.task_id), read=job.reads))
        return decided

    def _learn_owners(self, job: LeadPush, spare: list[float]) -> None:
        """After an owner set by email, read the lead once more: the new owner's id is
        then known (the next edit's base), not NULL until the next pull."""
        assert self.client is not None
        if job.fatal is not None or job.untried or not any(
                sent.error is None and sent.plan.payload is not None
                and "OwnerEmailAddress" in sent.plan.payload and sent.read == job.reads
                for sent in job.done):
            return
        try:
            self._read(job, spare)
        except (Stopped, ApiError) as exc:
            if isinstance(exc, FatalError):
                job.fatal = exc
            # Otherwise the owner's id comes with the next pull, as before.

    def push(self, run: Run) -> None:
        """Send every pending edit, lead by lead; raises FatalError after recording what
        was done. Claims are released whatever happens."""
        assert self.client is not None
        self._run = run
        self.settle_statuses()
        try:
            run.drive(self._push_lead, self._jobs(), self._record_leads)
        finally:
            def release_all() -> None:
                with self.engine.begin() as conn:
                    self.release(conn, run.id)

            try:
                retry_conflicts(release_all)
            except SQLAlchemyError as exc:
                self.log.error("claims_not_released", error=describe(exc))

    def _jobs(self) -> Iterator[LeadPush]:
        """The leads with pending edits, a page at a time, each page claimed first."""
        run_id = self.run.id
        for page in edit_queue.pending_pages(self.engine):
            prepared = self._prepare_page(run_id, self.claim(run_id, page))
            for item in prepared:
                self._record_rejected(item)
                if not item.edits:
                    with self.engine.begin() as conn:
                        self.release(conn, run_id, item.task_id)
            yield from (LeadPush(lead, items) for lead, items in self.by_lead(prepared).items())

    def _record_leads(self, done: list[LeadPush]) -> None:
        for job in done:
            self._record_lead(job)
        for job in done:
            if job.fatal is not None:
                raise job.fatal

    # -- recording (one transaction per task, so no outcome is lost to another's failure) --

    def _record_lead(self, job: LeadPush) -> None:
        run_id = self.run.id
        if job.rows is not None:
            # The read is a pull of that lead: written the way a pull writes it.
            outcome = LeadOutcome(0, job.lead_id, rows=job.rows, skipped=job.bad,
                                  sent_at=job.sent_at)
            def write(tx: Tx) -> None:
                written = write_batch(tx.conn, [outcome], run_id=run_id, now=utcnow(),
                                      history=self.history)
                tx.add(tasks_upserted=written.upserted, tasks_deleted=written.deleted)

            try:
                self.run.write(write)
            except SQLAlchemyError as exc:
                raise StoreError(f"cannot write lead {job.lead_id}: {describe(exc)}") from None
        if job.read_error is not None:
            error = job.read_error
            for item in job.tasks if job.unread is None else job.unread:
                self._record_error(item, ApiError(
                    f"cannot read the task's current state from LeadSquared: {error}",
                    exception_type=error.exception_type, status_code=error.status_code))
        decided = {sent.task.task_id for sent in job.done}
        for item in job.tasks:
            if item.task_id in job.bad and item.task_id not in decided:
                self._record_error(item, ApiError(
                    f"cannot read the task's current state from LeadSquared: "
                    f"{job.bad[item.task_id]}"))
        for sent in job.done:
            self._record(sent, latest=sent.read == job.reads)
        if job.untried:
            with self.engine.begin() as conn:
                for item in job.untried:
                    self.release(conn, run_id, item.task_id)

    def _record_rejected(self, prepared: TaskEdits) -> None:
        if not prepared.rejected:
            return
        now = utcnow()
        def write(tx: Tx) -> None:
            edit_queue.mark_invalid(tx.conn, self.run.id, prepared.rejected)
            tx.add(edits_failed=len(prepared.rejected))

        try:
            self.run.write(write)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot record edit outcomes: {describe(exc)}") from None
        for edit_id, why in prepared.rejected.items():
            self.log.warning("edit_failed", edit_id=edit_id, task_id=prepared.task_id,
                             reason="invalid", error=why, at=now.isoformat())

    def _record(self, sent: Sent, latest: bool = True) -> None:
        """One task's outcome. `latest`: its plan relied on the lead's last read (a later
        read, written by _record_lead, already holds what its Update did)."""
        decided = sent.plan
        if sent.error is not None:
            self._record_error(sent.task, sent.error)
            return
        run_id = self.run.id
        cancelled = [i for i in decided.ids if i in set(decided.cancelled)]
        ids = [i for i in decided.ids if i not in set(decided.cancelled)]
        now = utcnow()
        note = decided.describe()

        def write(tx: Tx) -> None:
            conn = tx.conn
            if decided.outcome == "send":
                edit_queue.mark(conn, ids, run_id, EditStatus.SENT, note, sent_at=now,
                                attempt=True)
                # An edit every field of which kept the CRM's value sent nothing.
                edit_queue.mark(conn, cancelled, run_id, EditStatus.CANCELLED, note)
                assert sent.remote is not None
                if latest:
                    self._apply(conn, decided, sent.remote, now)
                if self.history:
                    record_history(conn, [decided.task_id], now)
                tx.add(edits_sent=len(ids))
            elif decided.outcome == "applied":
                edit_queue.mark(conn, ids, run_id, EditStatus.SENT, sent_at=now)
                tx.add(edits_sent=len(ids))
            elif decided.outcome == "dropped":
                edit_queue.mark(conn, ids, run_id, EditStatus.CANCELLED, note)
            else:  # conflict, gone
                edit_queue.mark(conn, ids, run_id, EditStatus.CONFLICT, note)
                tx.add(edits_conflict=len(ids))
            self.release(conn, run_id, decided.task_id)

        try:
            self.run.write(write)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot record the outcome of task {decided.task_id}'s edits: "
                             f"{describe(exc)}") from None
        fields = {"task_id": decided.task_id, "edit_ids": decided.ids}
        if decided.outcome == "send":
            self.log.info("edits_sent", **fields, fields=sorted(decided.values))
            for conflict in decided.overwritten:
                self.log.warning("crm_change_overwritten", **fields, field=conflict.field,
                                 base=conflict.base, remote=conflict.remote,
                                 local=conflict.local, policy="on_conflict = local")
        elif decided.outcome == "applied":
            self.log.info("edits_already_applied", **fields)
        elif decided.outcome == "dropped":
            self.log.warning("edits_dropped", **fields, reason=decided.describe())
        else:
            self.log.warning("edit_conflict", **fields, reason=decided.describe())

    def _record_error(self, prepared: TaskEdits, error: ApiError) -> None:
        run_id = self.run.id
        ids = prepared.ids

        def write(tx: Tx) -> int:
            # A rejection: the same body fails the same way; anything else may heal.
            failed = edit_queue.mark_error(tx.conn, ids, run_id, self._why(error),
                                           final=isinstance(error, RejectedError),
                                           max_attempts=self.max_edit_attempts)
            tx.add(edits_failed=failed)
            self.release(tx.conn, run_id, prepared.task_id)
            return failed

        try:
            failed = self.run.write(write)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot record the outcome of task {prepared.task_id}'s edits: "
                             f"{describe(exc)}") from None
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
    def _apply(conn: Connection, decided: Plan, remote: Mapping[str, Any],
               now: datetime) -> None:
        """lsq_tasks takes the merged state at once: the CRM's row as just read with the
        sent values laid over it, `raw` and `raw_hash` included, so that the next pull
        notices any later change (the CRM setting an old value back, say)."""
        raw = dict(remote["raw"])
        values: dict[str, Any] = {"lead_id": remote["lead_id"], "deleted_at": None,
                                   "changed_at": now}
        owner_known = True
        for name, value in decided.values.items():
            f = BY_COLUMN[name]
            if name in OWNER:
                # The new owner's name (and, by email, its id) comes with the next read.
                values["owner_id"] = value if f.api is not None else None
                values["owner_name"] = None
                owner_known = False
                continue
            assert f.api is not None  # a field of the task (not NotifyBy: never in values)
            values[name] = parse_date(value) if f.kind == "date" else value
            raw[f.api] = str(value) if f.kind == "minutes" else value  # as the API gives it
        values["raw"] = raw
        values["raw_hash"] = raw_hash(raw) if owner_known else None
        overlay(conn, decided.task_id, values)
