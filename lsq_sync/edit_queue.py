"""The edit queue as people see it: queue an edit, list edits, retry or cancel them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import String, insert, or_, select, type_coerce, update
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement

from lsq_sync import edits
from lsq_sync.errors import ConfigError, InvalidEdit
from lsq_sync.models import task_edits, tasks
from lsq_sync.states import EditStatus
from lsq_sync.types import as_utc_or_none, utcnow

LENIENT_TIMES = ("created_at", "sent_at")
LIST_COLUMNS = ("id", "task_id", "status", "attempts", "created_at", "sent_at", "run_id",
                "last_error")


def queue(engine: Engine, task_id: str, fields: dict[str, Any]) -> int:
    """Check an edit and insert it as pending, with the synced state it is made against
    (its base); ConfigError says what is wrong with it."""
    try:
        checked = edits.check(fields)
    except InvalidEdit as exc:
        raise ConfigError(f"{exc}; nothing was queued") from None
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
            base=edits.base_of(dict(task), now), **checked))
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
        item["fields"] = {name: row[name] for name in edits.EDIT_FIELDS
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
                base=edits.base_of(dict(task), now) if task is not None else None))
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
