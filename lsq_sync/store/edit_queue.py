"""The edit queue as people see it: queue an edit, list edits, retry or cancel them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, func, insert, or_, select, type_coerce, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import ColumnElement

from lsq_sync.errors import ConfigError
from lsq_sync.states import EditStatus
from lsq_sync.store.models import task_edits, tasks
from lsq_sync.store.types import as_utc_or_none, utcnow

DUE_FORMAT = "%Y-%m-%d %H:%M:%S"
# The fields of lsq_task_edits that an edit carries (NULL: leave it as it is).
EDIT_FIELDS = tuple(c.name for c in task_edits.c if c.info.get("edit"))
# What an edit can change, as lsq_tasks columns: the fields of a task's snapshot. The
# lead is in it too: an Update names the lead, and a task moved in the CRM must not be
# moved back by an edit made before the move.
SNAPSHOT_FIELDS = (*(name for name in EDIT_FIELDS if name in tasks.c), "lead_id")


TAKEN_AT = "taken_at"  # in a base: when it was taken (ISO 8601, UTC)


def base_of(task: Mapping[str, Any], at: datetime) -> dict[str, Any]:
    """The base an edit records: the task's snapshot, and when it was taken."""
    return {**snapshot(task), TAKEN_AT: at.isoformat()}


def snapshot(task: Mapping[str, Any]) -> dict[str, Any]:
    """A task's editable fields as plain JSON values (an lsq_tasks row or a parsed task).

    Edits record the snapshot they were made against (`base`); a push compares the CRM's
    current snapshot with it.
    """
    shot = {name: task.get(name) for name in SNAPSHOT_FIELDS}
    due = shot["due_date"]
    if isinstance(due, datetime):
        shot["due_date"] = due.strftime(DUE_FORMAT)
    return shot


LENIENT_TIMES = ("created_at", "sent_at")
LIST_COLUMNS = ("id", "task_id", "status", "attempts", "created_at", "sent_at", "run_id",
                "last_error")


def add(engine: Engine, task_id: str, checked: Mapping[str, Any]) -> int:
    """Queue a checked edit (core.merge.queue checks it) as pending, with the synced
    state it is made against (its base); ConfigError if its task cannot take one."""
    with engine.begin() as conn:
        task = conn.execute(select(tasks).where(tasks.c.task_id == task_id)).mappings().first()
        if task is None:
            raise ConfigError(f"task {task_id} is not in lsq_tasks; pull its lead first "
                              f"(lsq-sync pull --lead-id LEAD); nothing was queued")
        if task["deleted_at"] is not None:
            raise ConfigError(f"task {task_id} was deleted in LeadSquared; nothing was queued")
        now = utcnow()
        result = conn.execute(insert(task_edits).values(
            task_id=task_id, status=EditStatus.PENDING, attempts=0, created_at=now,
            base=base_of(dict(task), now), **checked))
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])


def listing(engine: Engine, *, status: str | None = None, task_id: str | None = None,
            limit: int = 100) -> list[dict[str, Any]]:
    """Edits newest first, each with the fields it changes."""
    # Times read as stored: another system may have written anything in created_at.
    columns = [type_coerce(c, String).label(c.name) if c.name in LENIENT_TIMES else c
               for c in task_edits.c]
    query = select(*columns).order_by(task_edits.c.id.desc()).limit(limit)
    if status is not None:
        if status == EditStatus.PENDING:
            query = query.where(or_(task_edits.c.status.is_(None),
                                    task_edits.c.status == status))
        else:
            query = query.where(task_edits.c.status == status)
    if task_id is not None:
        query = query.where(task_edits.c.task_id == task_id)
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    result = []
    for row in rows:
        item = {name: row[name] for name in LIST_COLUMNS}
        for name in LENIENT_TIMES:
            item[name] = as_utc_or_none(row[name]) or row[name]
        item["status"] = row["status"] if row["status"] is not None else EditStatus.PENDING
        item["fields"] = {name: row[name] for name in EDIT_FIELDS
                          if row[name] is not None}
        result.append(item)
    return result


def _missing(engine: Engine, ids: Sequence[int]) -> None:
    with engine.connect() as conn:
        found = set(conn.execute(select(task_edits.c.id).where(task_edits.c.id.in_(ids)))
                    .scalars())
    absent = sorted(set(ids) - found)
    if absent:
        raise ConfigError(f"no edit {', '.join(map(str, absent))}; `lsq-sync edits` lists "
                          f"them; nothing was changed")


def retry(engine: Engine, ids: Sequence[int] = (), *, failed: bool = False,
          conflicts: bool = False) -> int:
    """Make edits pending again: attempts reset, error cleared, base taken afresh from the
    synced state (so that a conflict is judged against what a pull has since brought).
    Sent and cancelled edits are not retried. Returns how many."""
    _missing(engine, ids)
    statuses = [EditStatus.FAILED, EditStatus.CONFLICT]
    which: list[ColumnElement[bool]] = []
    if ids:
        which.append(task_edits.c.id.in_(ids))
    if failed:
        which.append(task_edits.c.status == EditStatus.FAILED)
    if conflicts:
        which.append(task_edits.c.status == EditStatus.CONFLICT)
    if not which:
        raise ConfigError("name the edits to retry (IDs, --failed or --conflicts)")
    count = 0
    now = utcnow()
    with engine.begin() as conn:
        rows = conn.execute(select(task_edits.c.id, task_edits.c.task_id).where(
            or_(*which), task_edits.c.status.in_(statuses))).all()
        for row in rows:
            task = conn.execute(select(tasks).where(tasks.c.task_id == row.task_id)
                                ).mappings().first()
            conn.execute(update(task_edits).where(task_edits.c.id == row.id).values(
                status=EditStatus.PENDING, attempts=0, last_error=None,
                base=base_of(dict(task), now) if task is not None else None))
            count += 1
    return count


def cancel(engine: Engine, ids: Sequence[int]) -> int:
    """Mark edits cancelled (never sent); sent ones cannot be. Returns how many."""
    _missing(engine, ids)
    with engine.begin() as conn:
        result = conn.execute(update(task_edits).where(
            task_edits.c.id.in_(ids),
            or_(task_edits.c.status.is_(None), task_edits.c.status.in_(
                [EditStatus.PENDING, EditStatus.FAILED, EditStatus.CONFLICT]))
        ).values(status=EditStatus.CANCELLED, last_error="cancelled by `lsq-sync edits cancel`"))
        return int(result.rowcount or 0)


def of_run(engine: Engine, run_id: int, limit: int = 1000) -> list[dict[str, Any]]:
    """The edits a run left failed or in conflict, for `runs show`."""
    with engine.connect() as conn:
        rows = conn.execute(select(task_edits.c.id, task_edits.c.task_id, task_edits.c.status,
                                   task_edits.c.last_error)
                            .where(task_edits.c.run_id == run_id, task_edits.c.status.in_(
                                [EditStatus.FAILED, EditStatus.CONFLICT]))
                            .order_by(task_edits.c.id).limit(limit)).mappings().all()
    return [dict(r) for r in rows]


# -- what a push reads and records (core/push.py decides; this module writes) -------------

PENDING = or_(task_edits.c.status.is_(None), task_edits.c.status == EditStatus.PENDING)
_WITH_TASK = task_edits.outerjoin(tasks, tasks.c.task_id == task_edits.c.task_id)
PAGE = 25  # leads claimed at a time: about one window of the default limit


def pending_pages(engine: Engine, page: int = PAGE) -> Iterator[list[str]]:
    """Task ids with pending edits, `page` leads at a time (all the pending tasks of each),
    the lead with the oldest pending edit first. Tasks not in lsq_tasks come as one group.

    A lead whose tasks stay pending in this run (a transient failure) is not offered again,
    since its oldest pending edit is behind the page marker.
    """
    after = 0
    first = func.min(task_edits.c.id).label("first")
    while True:
        with engine.connect() as conn:
            leads = conn.execute(
                select(tasks.c.lead_id, first).select_from(_WITH_TASK).where(PENDING)
                .group_by(tasks.c.lead_id).having(first > after).order_by(first)
                .limit(page)).all()
            if not leads:
                return
            named = [row.lead_id for row in leads if row.lead_id is not None]
            which = [tasks.c.lead_id.in_(named)] if named else []
            if len(named) < len(leads):
                which.append(tasks.c.task_id.is_(None))
            task_first = func.min(task_edits.c.id)
            ids = conn.execute(
                select(task_edits.c.task_id).select_from(_WITH_TASK)
                .where(PENDING, or_(*which)).group_by(task_edits.c.task_id)
                .order_by(task_first)).scalars().all()
        yield list(ids)
        after = leads[-1].first


def since(row: Mapping[str, Any]) -> datetime | None:
    """When an edit row's base was taken: its `taken_at`, else its created_at (read
    leniently: other systems write both)."""
    base = row.get("base")
    taken = as_utc_or_none(base.get(TAKEN_AT)) if isinstance(base, Mapping) else None
    return taken or as_utc_or_none(row.get("created_at"))


@dataclass
class Pending:
    """One task's pending edit rows (oldest first), its lsq_tasks row, and its edits sent
    since the oldest of them took its base (less `landing`)."""

    task_id: str
    rows: list[dict[str, Any]]
    task: dict[str, Any] | None
    landed: list[dict[str, Any]]


def load_pending(conn: Connection, task_id: str, landing: timedelta) -> Pending:
    # Only the fields an edit carries: other systems may have put anything in the rest,
    # created_at included (read as stored).
    fields = [task_edits.c[name] for name in EDIT_FIELDS]
    rows = [dict(r) for r in conn.execute(
        select(task_edits.c.id, task_edits.c.base, *fields,
               type_coerce(task_edits.c.created_at, String).label("created_at"))
        .where(task_edits.c.task_id == task_id, PENDING)
        .order_by(task_edits.c.id)).mappings()]
    task = conn.execute(select(tasks).where(tasks.c.task_id == task_id)).mappings().first()
    bases = [b for b in map(since, rows) if b is not None]
    landed: list[dict[str, Any]] = []
    if bases:
        landed = [dict(r) for r in conn.execute(select(*fields, task_edits.c.sent_at).where(
            task_edits.c.task_id == task_id, task_edits.c.status == EditStatus.SENT,
            task_edits.c.sent_at >= min(bases) - landing)
            .order_by(task_edits.c.id)).mappings()]
    return Pending(task_id, rows, dict(task) if task else None, landed)


def record_bases(engine: Engine, bases: Mapping[int, dict[str, Any]]) -> None:
    """The bases taken now for rows another system inserted without one."""
    if bases:
        with engine.begin() as conn:
            for edit_id, base in bases.items():
                conn.execute(update(task_edits).where(task_edits.c.id == edit_id)
                             .values(base=base))


def settle_statuses(conn: Connection, run_id: int) -> int:
    """Statuses other systems wrote: 'Pending', ' SENT ' mean themselves; any other value
    is marked failed, with a reason, so that no row waits forever unreported. Returns how
    many were marked failed."""
    known = [s.value for s in EditStatus]
    failed = 0
    odd = conn.execute(select(task_edits.c.status).distinct().where(
        task_edits.c.status.is_not(None), task_edits.c.status.not_in(known))).scalars().all()
    for value in odd:
        status = EditStatus.parse(value) if isinstance(value, str) else None
        if status is None:
            failed += int(conn.execute(update(task_edits).where(
                task_edits.c.status == value).values(
                status=EditStatus.FAILED, run_id=run_id,
                last_error=f"unknown status {repr(value)[:40]}; use NULL or 'pending'"
            )).rowcount or 0)
        else:
            conn.execute(update(task_edits).where(task_edits.c.status == value)
                         .values(status=status))
    return failed


def mark(conn: Connection, ids: Sequence[int], run_id: int, status: EditStatus,
         note: str | None = None, *, sent_at: datetime | None = None,
         attempt: bool = False) -> None:
    """Edits `ids` take `status` (with their note in last_error); `attempt` counts one
    more attempt."""
    if not ids:
        return
    values: dict[str, Any] = {"status": status, "run_id": run_id,
                              "last_error": note[:4000] if note else None}
    if sent_at is not None:
        values["sent_at"] = sent_at
    if attempt:
        values["attempts"] = func.coalesce(task_edits.c.attempts, 0) + 1
    conn.execute(update(task_edits).where(task_edits.c.id.in_(ids)).values(**values))


def mark_invalid(conn: Connection, run_id: int, rejected: Mapping[int, str]) -> None:
    for edit_id, why in rejected.items():
        mark(conn, [edit_id], run_id, EditStatus.FAILED, why[:2000])


def mark_error(conn: Connection, ids: Sequence[int], run_id: int, why: str, *, final: bool,
               max_attempts: int) -> int:
    """An attempt that failed: `final` (the same body fails the same way) marks the edits
    failed at once; else they stay pending until `max_attempts`. Returns how many failed."""
    rows = task_edits.c.id.in_(ids)
    attempts = func.coalesce(task_edits.c.attempts, 0) + 1
    if final:
        conn.execute(update(task_edits).where(rows).values(
            status=EditStatus.FAILED, attempts=attempts, run_id=run_id, last_error=why))
        return len(ids)
    conn.execute(update(task_edits).where(rows).values(
        attempts=attempts, run_id=run_id, last_error=why))
    conn.execute(update(task_edits).where(rows, task_edits.c.attempts >= max_attempts)
                 .values(status=EditStatus.FAILED))
    return int(conn.execute(select(func.count()).select_from(task_edits).where(
        rows, task_edits.c.status == EditStatus.FAILED)).scalar_one())
