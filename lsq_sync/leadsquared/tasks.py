"""Turn a RetrieveTaskByLeadId answer into rows for lsq_tasks, strictly."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lsq_sync.errors import BadRecord
from lsq_sync.leadsquared.fields import READ
from lsq_sync.store.models import tasks as tasks_table

# The longest value each text column holds (a longer one fails its task, not the batch).
COLUMN_LIMITS = {f.column: length for f in READ if f.kind in ("text", "guid")
                 if (length := getattr(tasks_table.c[f.column].type, "length", None))}


def parse_date(value: Any, field: str = "date") -> datetime | None:
    """'YYYY-MM-DD HH:MM:SS' with or without a fraction, as UTC; placeholders are None."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadRecord(f"{field} is {type(value).__name__}, not a date string")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise BadRecord(f"{field} {value[:40]!r} is not a date") from None
    if parsed.year <= 1:  # 0001-01-01: the API's "no date"
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


# reminder_minutes is a 32-bit INTEGER on PostgreSQL and MySQL; SQLite's driver cannot
# even bind a number past 64 bits. A value outside fails its own task, not the batch.
REMINDER_MAX = 2**31 - 1
_WHOLE_RE = re.compile(r"[+-]?[0-9]+")  # ASCII digits only: int() also takes '٣' and '³'


def parse_reminder(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise BadRecord("Reminder is a boolean, not minutes")
    number: int | None = None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and _WHOLE_RE.fullmatch(value.strip()):
        number = int(value.strip())
    if number is None:
        raise BadRecord(f"Reminder {str(value)[:40]!r} is not a whole number of minutes")
    if abs(number) > REMINDER_MAX:
        raise BadRecord(f"Reminder {str(number)[:40]} is out of range (at most "
                        f"{REMINDER_MAX} minutes)")
    return number


NUL = "\x00"
REPLACEMENT = "\ufffd"


def without_nul(value: Any) -> tuple[Any, bool]:
    """`value` with every NUL character in its strings (keys too) replaced by U+FFFD, which
    PostgreSQL's text and JSONB refuse; and whether any was found."""
    if isinstance(value, str):
        return (value.replace(NUL, REPLACEMENT), True) if NUL in value else (value, False)
    if isinstance(value, dict):
        found = False
        clean = {}
        for key, item in value.items():
            new_key, k_found = without_nul(key)
            new_item, i_found = without_nul(item)
            clean[new_key] = new_item
            found = found or k_found or i_found
        return (clean, True) if found else (value, False)
    if isinstance(value, list):
        pairs = [without_nul(item) for item in value]
        if any(found for _, found in pairs):
            return [item for item, _ in pairs], True
    return value, False


def task_id_of(item: Any) -> str:
    """The TaskID of one listed task, or BadRecord: without it nothing can be kept."""
    if not isinstance(item, dict):
        raise BadRecord(f"a task is {type(item).__name__}, not an object")
    task_id = item.get("TaskID")
    if not isinstance(task_id, str) or not task_id.strip() or len(task_id) > 64 \
            or NUL in task_id:
        raise BadRecord(f"a task has no usable TaskID ({str(task_id)[:40]!r})")
    return task_id


def parse_task(item: Any, lead_id: str) -> dict[str, Any]:
    task_id = task_id_of(item)
    item, _ = without_nul(item)
    row: dict[str, Any] = {"task_id": task_id, "lead_id": lead_id}
    for f in READ:
        assert f.api is not None
        value = item.get(f.api)
        if f.kind == "date":
            row[f.column] = parse_date(value, f"task {task_id}: {f.api}")
            continue
        if f.kind == "minutes":
            try:
                row[f.column] = parse_reminder(value)
            except BadRecord as exc:
                raise BadRecord(f"task {task_id}: {exc}") from None
            continue
        if value is not None and not isinstance(value, str):
            raise BadRecord(f"task {task_id}: {f.api} is {type(value).__name__}, not text")
        limit = COLUMN_LIMITS.get(f.column)
        if value is not None and limit is not None and len(value) > limit:
            raise BadRecord(f"task {task_id}: {f.api} is longer than {limit} characters")
        row[f.column] = value
    row["raw"] = item
    return row


@dataclass
class TaskList:
    """One lead's answer: the tasks that parsed, and the ones skipped as bad, by id."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    bad: dict[str, str] = field(default_factory=dict)       # task id -> why
    cleaned: list[str] = field(default_factory=list)        # task ids that had NULs
    sent_at: datetime | None = None  # when the request that answered was sent (UTC)


def parse_task_list(body: Any, lead_id: str) -> list[dict[str, Any]]:
    """All tasks of one lead, or BadRecord if any part of the answer is malformed (what a
    push needs before it writes a task)."""
    result = parse_tasks(body, lead_id)
    for why in result.bad.values():
        raise BadRecord(why)
    return result.rows


def parse_tasks(body: Any, lead_id: str) -> TaskList:
    """All tasks of one lead (what a pull needs). A task with a wrongly typed or missing
    field is skipped (and listed in `bad`), so that it does not freeze its neighbours;
    BadRecord if the answer itself, or a task without a usable TaskID, is malformed: then
    nothing of the lead can be trusted (marking its missing tasks deleted would be wrong)."""
    if not isinstance(body, dict):
        raise BadRecord(f"the answer is {type(body).__name__}, not an object")
    items = body.get("TaskList")
    if items is None:
        items = []
    if not isinstance(items, list):
        raise BadRecord(f"TaskList is {type(items).__name__}, not a list")
    count = body.get("RecordCount")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
        raise BadRecord(f"RecordCount is {type(count).__name__}, not a number")
    if isinstance(count, int) and count > len(items):
        # Marking the missing ones deleted would be wrong: refuse the partial list.
        raise BadRecord(f"RecordCount is {count} but TaskList holds {len(items)} tasks")
    result = TaskList()
    for item in items:
        task_id = task_id_of(item)
        try:
            result.rows.append(parse_task(item, lead_id))
        except BadRecord as exc:
            result.bad[task_id] = str(exc)
            continue
        if result.rows[-1]["raw"] is not item:
            result.cleaned.append(task_id)
    return result
