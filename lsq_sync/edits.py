"""Queued edits: check each one, merge a task's edits in order, build the Update body."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

GUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
DUE_RE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
DUE_FORMAT = "%Y-%m-%d %H:%M:%S"
NOTIFY_VALUES = ("1100", "1000")
MAX_REMINDER = 60 * 24 * 366  # a year of minutes
EDIT_FIELDS = ("name", "description", "due_date", "reminder_minutes", "notify_by", "owner_id",
               "owner_email")


class InvalidEdit(ValueError):
    """An edit that must not reach the API; the message becomes its last_error."""


def _text(value: Any, name: str) -> str:
    if isinstance(value, bytes | bytearray):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidEdit(f"{name} is not text") from None
    if not isinstance(value, str):
        raise InvalidEdit(f"{name} must be text, not {type(value).__name__}")
    return value


def check(edit: Mapping[str, Any]) -> dict[str, Any]:
    """The edit's fields, normalised; InvalidEdit says what is wrong with the first bad one.

    NULL (None) means "leave it as it is" and is dropped.
    """
    clean: dict[str, Any] = {}
    if edit.get("name") is not None:
        name = _text(edit["name"], "name")
        if not name.strip():
            raise InvalidEdit("name is blank; set a name or leave it NULL")
        if len(name) > 500:
            raise InvalidEdit("name is longer than 500 characters")
        clean["name"] = name
    if edit.get("description") is not None:
        clean["description"] = _text(edit["description"], "description")
    if edit.get("due_date") is not None:
        due = _text(edit["due_date"], "due_date").strip()
        if not DUE_RE.fullmatch(due):
            raise InvalidEdit(f"due_date {due[:40]!r} is not YYYY-MM-DD HH:MM:SS (UTC)")
        try:
            datetime.strptime(due, DUE_FORMAT)
        except ValueError:
            raise InvalidEdit(f"due_date {due!r} is not a real date") from None
        clean["due_date"] = due
    if edit.get("reminder_minutes") is not None:
        reminder = edit["reminder_minutes"]
        if isinstance(reminder, str) and reminder.strip().isdigit():
            reminder = int(reminder.strip())
        if isinstance(reminder, bool) or not isinstance(reminder, int):
            raise InvalidEdit(f"reminder_minutes {str(reminder)[:20]!r} is not a whole number")
        if not 0 <= reminder <= MAX_REMINDER:
            raise InvalidEdit(f"reminder_minutes {reminder} must be between 0 and "
                              f"{MAX_REMINDER}")
        clean["reminder_minutes"] = reminder
    if edit.get("notify_by") is not None:
        notify = str(edit["notify_by"]).strip()
        if notify not in NOTIFY_VALUES:
            raise InvalidEdit(f"notify_by {notify[:20]!r} must be 1100 (email the owner) or "
                              f"1000 (no notification)")
        clean["notify_by"] = notify
    owner_id, owner_email = edit.get("owner_id"), edit.get("owner_email")
    if owner_id is not None and owner_email is not None:
        raise InvalidEdit("owner_id and owner_email are both set; give one of them")
    if owner_id is not None:
        owner = _text(owner_id, "owner_id").strip()
        if not GUID_RE.fullmatch(owner):
            raise InvalidEdit(f"owner_id {owner[:40]!r} is not a GUID")
        clean["owner_id"] = owner
    if owner_email is not None:
        email = _text(owner_email, "owner_email").strip()
        if not EMAIL_RE.fullmatch(email) or len(email) > 255:
            raise InvalidEdit(f"owner_email {email[:40]!r} is not an email address")
        clean["owner_email"] = email
    if not clean:
        raise InvalidEdit("the edit changes nothing (every field is NULL)")
    return clean


def merge(edits: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Checked edits of one task, oldest first, folded into one: later values win.

    The owner is one choice: a later owner_email replaces an earlier owner_id and back.
    """
    merged: dict[str, Any] = {}
    for edit in edits:
        if "owner_id" in edit or "owner_email" in edit:
            merged.pop("owner_id", None)
            merged.pop("owner_email", None)
        merged.update(edit)
    return merged


def body(task: Mapping[str, Any], merged: Mapping[str, Any], default_notify: str
         ) -> dict[str, Any]:
    """Task.svc/Update's JSON: the task's last synced state with the edit laid over it."""
    due = merged.get("due_date")
    if due is None and task.get("due_date") is not None:
        due = task["due_date"].strftime(DUE_FORMAT)
    payload: dict[str, Any] = {
        "UserTaskId": task["task_id"],
        "Name": merged.get("name", task.get("name")),
        "Description": merged.get("description", task.get("description")),
        "RelatedEntity": 1,
        "RelatedEntityId": task["lead_id"],
        "DueDate": due,
        "Reminder": merged.get("reminder_minutes", task.get("reminder_minutes")),
        "NotifyBy": merged.get("notify_by", default_notify),
    }
    if "owner_email" in merged:
        payload["OwnerEmailAddress"] = merged["owner_email"]
    else:
        payload["OwnerId"] = merged.get("owner_id", task.get("owner_id"))
    return {k: v for k, v in payload.items() if v is not None}


@dataclass
class TaskEdits:
    """The pending edits of one task, split into those that can go and those that cannot."""

    task_id: str
    ids: list[int] = field(default_factory=list)            # edits merged into `payload`
    rejected: dict[int, str] = field(default_factory=dict)  # edit id -> why not
    payload: dict[str, Any] | None = None
    changes: dict[str, Any] = field(default_factory=dict)   # what lsq_tasks takes on success


def prepare(task_id: str, rows: Sequence[Mapping[str, Any]], task: Mapping[str, Any] | None,
            default_notify: str) -> TaskEdits:
    """Check, merge and build the call for one task's pending edits (rows oldest first)."""
    result = TaskEdits(task_id)
    if task is None:
        for row in rows:
            result.rejected[row["id"]] = (f"task {task_id} is not in lsq_tasks; pull its lead "
                                          f"first (or check the id)")
        return result
    if task.get("deleted_at") is not None:
        when = task["deleted_at"].strftime(DUE_FORMAT)
        for row in rows:
            result.rejected[row["id"]] = f"task {task_id} was deleted in LeadSquared ({when} UTC)"
        return result
    checked = []
    for row in rows:
        try:
            checked.append(check(row))
            result.ids.append(row["id"])
        except InvalidEdit as exc:
            result.rejected[row["id"]] = str(exc)
    if checked:
        merged = merge(checked)
        result.payload = body(task, merged, default_notify)
        result.changes = {k: merged[k] for k in ("name", "description", "reminder_minutes",
                                                 "owner_id") if k in merged}
        if "due_date" in merged:
            result.changes["due_date"] = merged["due_date"]
    return result
