"""Queued edits: check each one, merge them three ways with the CRM's state, build the Update."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

from lsq_sync.errors import InvalidEdit
from lsq_sync.models import max_length, task_edits
from lsq_sync.states import NotifyBy, OnConflict
from lsq_sync.types import as_utc_or_none, utcnow

GUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
DUE_RE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
DUE_FORMAT = "%Y-%m-%d %H:%M:%S"
NOTIFY_VALUES = get_args(NotifyBy)
MAX_REMINDER = 60 * 24 * 366  # a year of minutes
NAME_MAX = max_length(task_edits.c.name)
EMAIL_MAX = max_length(task_edits.c.owner_email)
EDIT_FIELDS = ("name", "description", "due_date", "reminder_minutes", "notify_by", "owner_id",
               "owner_email")



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
        if len(name) > NAME_MAX:
            raise InvalidEdit(f"name is longer than {NAME_MAX} characters")
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
        # ASCII digits only: '²'.isdigit() is true, and int() refuses it (or, for '٣',
        # takes it as 3).
        if isinstance(reminder, str) and reminder.strip().isascii() \
                and reminder.strip().isdigit():
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
        if not EMAIL_RE.fullmatch(email) or len(email) > EMAIL_MAX:
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


# What an edit can change, as lsq_tasks columns: the fields of a task's snapshot. The
# lead is in it too: an Update names the lead, and a task moved in the CRM must not be
# moved back by an edit made before the move.
SNAPSHOT_FIELDS = ("name", "description", "due_date", "reminder_minutes", "owner_id", "lead_id")


# An edit sent this long before another edit of its task took its base may still have
# been landing in lsq_tasks then (see plan).
LANDING = timedelta(minutes=1)
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


def _same(name: str, a: Any, b: Any) -> bool:
    if name in ("owner_id", "lead_id") and isinstance(a, str) and isinstance(b, str):
        return a.strip().lower() == b.strip().lower()  # GUIDs come in either case
    if name in ("name", "description"):
        return (a or "") == (b or "")  # the API gives "" and null for an empty text alike
    return bool(a == b)


def body(task: Mapping[str, Any], values: Mapping[str, Any], default_notify: str
         ) -> dict[str, Any]:
    """Task.svc/Update's JSON: `task` (the CRM's current state, as columns) with `values`
    laid over it. Every field is sent, so the call is right whether Update keeps or clears
    the fields a body omits."""
    shot = snapshot(task)
    # A date the CRM holds as its placeholder (0001-01-01) is NULL in lsq_tasks: it is sent
    # as the CRM gave it, since Update may clear, or refuse, a body without it.
    raw = task.get("raw")
    held_due = raw.get("DueDate") if isinstance(raw, Mapping) else None
    due = held_due if isinstance(held_due, str) and held_due.strip() else shot["due_date"]
    payload: dict[str, Any] = {
        "UserTaskId": task["task_id"],
        "Name": values.get("name", shot["name"]),
        "Description": values.get("description", shot["description"]),
        "RelatedEntity": 1,
        "RelatedEntityId": shot["lead_id"],
        "DueDate": values.get("due_date", due),
        "Reminder": values.get("reminder_minutes", shot["reminder_minutes"]),
        "NotifyBy": values.get("notify_by", default_notify),
    }
    if "owner_email" in values:
        payload["OwnerEmailAddress"] = values["owner_email"]
    else:
        payload["OwnerId"] = values.get("owner_id", shot["owner_id"])
    return {k: v for k, v in payload.items() if v is not None}


@dataclass
class Edit:
    """One checked edit and the synced state it was made against."""

    id: int
    fields: dict[str, Any]
    base: dict[str, Any]
    since: datetime | None = None  # when its base was taken (None: not known)


@dataclass
class Landed:
    """An edit of the task already sent: its fields, and when it was sent."""

    sent_at: datetime | None
    fields: dict[str, Any]


@dataclass
class TaskEdits:
    """The pending edits of one task: those that can go, and those that cannot."""

    task_id: str
    lead_id: str | None = None
    edits: list[Edit] = field(default_factory=list)
    rejected: dict[int, str] = field(default_factory=dict)   # edit id -> why not
    new_bases: dict[int, dict[str, Any]] = field(default_factory=dict)  # to record now
    # This task's edits sent since the oldest of these took its base: that base may have
    # been taken before they landed in lsq_tasks.
    landed: list[Landed] = field(default_factory=list)
    synced: dict[str, Any] | None = None     # its lsq_tasks row

    @property
    def ids(self) -> list[int]:
        return [e.id for e in self.edits]


def since(row: Mapping[str, Any]) -> datetime | None:
    """When an edit row's base was taken: its `taken_at`, else its created_at (read
    leniently: other systems write both)."""
    base = row.get("base")
    taken = as_utc_or_none(base.get(TAKEN_AT)) if isinstance(base, Mapping) else None
    return taken or as_utc_or_none(row.get("created_at"))


def prepare(task_id: str, rows: Sequence[Mapping[str, Any]], task: Mapping[str, Any] | None,
            landed: Sequence[Mapping[str, Any]] = ()) -> TaskEdits:
    """Check one task's pending edits (rows oldest first) against its lsq_tasks row;
    `landed` are the task's sent edits (with their `sent_at`) since the oldest of them
    took its base.

    An edit without a base (a row another system inserted) takes the synced state now,
    the first time a push sees it; `new_bases` lists those, for the caller to record.
    """
    result = TaskEdits(task_id, synced=dict(task) if task is not None else None)
    for row in landed:
        try:
            result.landed.append(Landed(as_utc_or_none(row.get("sent_at")), check(row)))
        except Exception:  # noqa: S112 - it was sent, so it was valid when it was
            continue
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
    result.lead_id = task["lead_id"]
    for row in rows:
        try:
            checked = check(row)
        except InvalidEdit as exc:
            result.rejected[row["id"]] = str(exc)
            continue
        except Exception as exc:  # a value no check foresaw fails this edit, not the push
            result.rejected[row["id"]] = (f"cannot read this edit ({type(exc).__name__}: "
                                          f"{str(exc)[:200]})")
            continue
        base = row.get("base")
        taken = since(row)
        if not isinstance(base, dict) or not set(SNAPSHOT_FIELDS) <= set(base):
            now = utcnow()
            base = result.new_bases[row["id"]] = base_of(task, now)
            taken = now
        result.edits.append(Edit(row["id"], checked, base, taken))
    return result


@dataclass
class Conflict:
    """A field changed both here (local) and in the CRM (remote) since the edit's base."""

    field: str
    base: Any
    remote: Any
    local: Any

    def __str__(self) -> str:
        return f"{self.field}: base {self.base!r}, remote {self.remote!r}, local {self.local!r}"


Outcome = Literal["send", "conflict", "gone", "applied", "dropped"]


@dataclass
class Plan:
    """What a push does with one task's edits, given what the CRM holds now.

    send: `payload` goes out. conflict: held, nothing sent. gone: the task is no longer
    under its lead. applied: the CRM already holds every edited value (nothing to send).
    dropped: on_conflict = "remote" dropped every edited field (with send, the edits
    whose fields were all dropped are `cancelled`).
    """

    task_id: str
    ids: list[int]
    outcome: Outcome
    payload: dict[str, Any] | None = None
    values: dict[str, Any] = field(default_factory=dict)     # the edited values sent
    remote: dict[str, Any] = field(default_factory=dict)     # the CRM's snapshot
    conflicts: list[Conflict] = field(default_factory=list)  # held (skip)
    overwritten: list[Conflict] = field(default_factory=list)  # sent anyway (local)
    dropped: list[Conflict] = field(default_factory=list)    # kept the CRM's (remote)
    cancelled: list[int] = field(default_factory=list)  # send: edits all of whose fields
                                                        # kept the CRM's value
    message: str | None = None

    def describe(self) -> str | None:
        """What last_error says about this plan, if anything."""
        if self.outcome == "conflict":
            return ("conflict with a change in LeadSquared (on_conflict = skip): "
                    + "; ".join(map(str, self.conflicts))
                    + "; `lsq-sync edits retry ID` sends it against the new state")
        if self.outcome == "gone":
            return self.message
        if self.dropped:
            return ("kept LeadSquared's value (on_conflict = remote): "
                    + "; ".join(map(str, self.dropped)))
        return None


def plan(prepared: TaskEdits, remote: Mapping[str, Any] | None, default_notify: str,
         on_conflict: OnConflict = "skip") -> Plan:
    """The three-way merge of one task's edits: base (what each edit was made against),
    remote (what LeadSquared holds now, as columns; None if the task is no longer under
    its lead) and local (the edits, later ones winning field by field).

    A field no edit touches is sent as the CRM holds it; an edited field whose remote
    value equals its base or its local value is sent as edited; one that differs from both
    is a conflict, settled by `on_conflict`. A remote value that another of the task's
    edits set (an earlier pending one, or one of `prepared.landed`) is ours, not the CRM's:
    its Update went out after the later edits' bases were taken (it was in flight, or its
    run died before recording it).
    """
    result = Plan(prepared.task_id, prepared.ids, "send")
    if remote is None:
        result.outcome = "gone"
        result.message = (f"task {prepared.task_id} is no longer under lead {prepared.lead_id} "
                          f"in LeadSquared (deleted or moved); nothing was sent; pull, then "
                          f"`lsq-sync edits retry`")
        return result
    result.remote = now = snapshot(remote)
    local: dict[str, tuple[Any, Edit]] = {}  # field -> (local value, the edit that set it)
    pending: dict[str, list[Any]] = {}  # column -> the values the edits set (maybe sent)
    notify = default_notify
    for edit in prepared.edits:
        if "owner_id" in edit.fields or "owner_email" in edit.fields:
            local.pop("owner_id", None)
            local.pop("owner_email", None)
        for name, value in edit.fields.items():
            if name == "notify_by":
                notify = value
                continue
            column = _column(name)
            if name != "owner_email":
                pending.setdefault(column, []).append(value)
            local[name] = (value, edit)
    for name, (value, edit) in local.items():
        column = _column(name)
        # An owner given by email cannot be compared with the CRM's owner id.
        if name != "owner_email" and _same(column, value, now[column]):
            continue
        ours = [*pending.get(column, ()), *_landed_values(prepared.landed, column, edit.since)]
        if any(_same(column, now[column], known)
               for known in [edit.base.get(column), *ours]):
            result.values[name] = value
            continue
        base = edit.base.get(column)
        conflict = Conflict(name, base, now[column], value)
        if on_conflict == "local":
            result.values[name] = value
            result.overwritten.append(conflict)
        elif on_conflict == "remote":
            result.dropped.append(conflict)
        else:
            result.conflicts.append(conflict)
    if result.conflicts:
        result.outcome = "conflict"
    elif not result.values:
        result.outcome = "dropped" if result.dropped else "applied"
    else:
        result.payload = body(remote, {**result.values, "notify_by": notify}, default_notify)
        # An edit whose every field kept the CRM's value sent nothing of its own.
        kept = {_column(c.field) for c in result.dropped}
        result.cancelled = [e.id for e in prepared.edits
                            if (own := {_column(n) for n in e.fields if n != "notify_by"})
                            and own <= kept]
    return result


def _column(name: str) -> str:
    """The lsq_tasks column an edit field is compared with."""
    return "owner_id" if name == "owner_email" else name


def _landed_values(landed: Sequence[Landed], column: str, since: datetime | None
                   ) -> list[Any]:
    """The values sent edits set in `column` since an edit took its base (less LANDING):
    an older one was in lsq_tasks before that base was taken, so the base already says
    whether the CRM has changed since; counting it as ours would hide a CRM user who set
    that value again."""
    if since is None:  # not known: no sent value can be shown to be ours
        return []
    return [edit.fields[column] for edit in landed if column in edit.fields
            and edit.sent_at is not None and edit.sent_at >= since - LANDING]
