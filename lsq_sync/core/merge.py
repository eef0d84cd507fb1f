"""Queued edits: check each one, merge them three ways with the CRM's state, build the Update."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

from sqlalchemy.engine import Engine

from lsq_sync.errors import ConfigError, InvalidEdit
from lsq_sync.leadsquared.fields import BY_COLUMN, EDITABLE, NOTIFY, OWNER, Field
from lsq_sync.states import NotifyBy, OnConflict
from lsq_sync.store import edit_queue
from lsq_sync.store.edit_queue import (
    DUE_FORMAT,
    SNAPSHOT_FIELDS,
    base_of,
    since,
    snapshot,
)
from lsq_sync.store.leads import GUID_RE
from lsq_sync.store.models import task_edits
from lsq_sync.store.types import as_utc_or_none, utcnow

EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
DUE_RE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
NOTIFY_VALUES = get_args(NotifyBy)
MAX_REMINDER = 60 * 24 * 366  # a year of minutes



def _text(value: Any, name: str) -> str:
    if isinstance(value, bytes | bytearray):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidEdit(f"{name} is not text") from None
    if not isinstance(value, str):
        raise InvalidEdit(f"{name} must be text, not {type(value).__name__}")
    return value


def _checked(f: Field, value: Any) -> Any:
    """One edit field's value, normalised by its kind; InvalidEdit says what is wrong."""
    name = f.column
    if f.kind == "minutes":
        # ASCII digits only: '²'.isdigit() is true, and int() refuses it (or, for '٣',
        # takes it as 3).
        if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
            value = int(value.strip())
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidEdit(f"{name} {str(value)[:20]!r} is not a whole number")
        if not 0 <= value <= MAX_REMINDER:
            raise InvalidEdit(f"{name} {value} must be between 0 and {MAX_REMINDER}")
        return value
    if f.kind == "notify":
        notify = str(value).strip()
        if notify not in NOTIFY_VALUES:
            raise InvalidEdit(f"{name} {notify[:20]!r} must be 1100 (email the owner) or "
                              f"1000 (no notification)")
        return notify
    text = _text(value, name)
    limit: int | None = getattr(task_edits.c[name].type, "length", None)  # None: any
    if f.kind == "date":
        due = text.strip()
        if not DUE_RE.fullmatch(due):
            raise InvalidEdit(f"{name} {due[:40]!r} is not YYYY-MM-DD HH:MM:SS (UTC)")
        try:
            datetime.strptime(due, DUE_FORMAT)
        except ValueError:
            raise InvalidEdit(f"{name} {due!r} is not a real date") from None
        return due
    if f.kind == "guid":
        if not GUID_RE.fullmatch(text.strip()):
            raise InvalidEdit(f"{name} {text.strip()[:40]!r} is not a GUID")
        return text.strip()
    if f.kind == "email":
        email = text.strip()
        if not EMAIL_RE.fullmatch(email) or (limit is not None and len(email) > limit):
            raise InvalidEdit(f"{name} {email[:40]!r} is not an email address")
        return email
    if f.required and not text.strip():
        raise InvalidEdit(f"{name} is blank; set a {name} or leave it NULL")
    if limit is not None and len(text) > limit:
        raise InvalidEdit(f"{name} is longer than {limit} characters")
    return text


def check(edit: Mapping[str, Any]) -> dict[str, Any]:
    """The edit's fields (fields.EDITABLE), normalised; InvalidEdit says what is wrong with
    the first bad one. NULL (None) means "leave it as it is" and is dropped."""
    clean: dict[str, Any] = {}
    for f in EDITABLE:
        if f.column == OWNER[0] and all(edit.get(o) is not None for o in OWNER):
            raise InvalidEdit(f"{' and '.join(OWNER)} are both set; give one of them")
        if edit.get(f.column) is not None:
            clean[f.column] = _checked(f, edit[f.column])
    if not clean:
        raise InvalidEdit("the edit changes nothing (no field is set)")
    return clean


def merge(edits: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Checked edits of one task, oldest first, folded into one: later values win.

    The owner is one choice: a later owner_email replaces an earlier owner_id and back.
    """
    merged: dict[str, Any] = {}
    for edit in edits:
        if any(o in edit for o in OWNER):
            for o in OWNER:
                merged.pop(o, None)
        merged.update(edit)
    return merged


# An edit sent this long before another edit of its task took its base may still have
# been landing in lsq_tasks then (see plan).
LANDING = timedelta(minutes=1)


def _same(name: str, a: Any, b: Any) -> bool:
    kind = "guid" if name == "lead_id" else BY_COLUMN[name].kind
    if kind == "guid" and isinstance(a, str) and isinstance(b, str):
        return a.strip().lower() == b.strip().lower()  # GUIDs come in either case
    if kind == "text":
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
    held = {**shot, "due_date": due, NOTIFY: default_notify}
    owner = next((o for o in reversed(OWNER) if o in values), OWNER[0])
    payload: dict[str, Any] = {"UserTaskId": task["task_id"], "RelatedEntity": 1,
                               "RelatedEntityId": shot["lead_id"]}
    for f in EDITABLE:
        if f.column in OWNER and f.column != owner:
            continue  # the owner is named one way
        assert f.update is not None
        payload[f.update] = values.get(f.column, held.get(f.column))
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
        if any(o in edit.fields for o in OWNER):
            for o in OWNER:
                local.pop(o, None)
        for name, value in edit.fields.items():
            if BY_COLUMN[name].kind == "notify":
                notify = value
                continue
            column = _column(name)
            if column == name:  # a value the task's own column can hold (not an email)
                pending.setdefault(column, []).append(value)
            local[name] = (value, edit)
    for name, (value, edit) in local.items():
        column = _column(name)
        # An owner given by email cannot be compared with the CRM's owner id.
        if column == name and _same(column, value, now[column]):
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
        result.payload = body(remote, {**result.values, NOTIFY: notify}, default_notify)
        # An edit whose every field kept the CRM's value sent nothing of its own.
        kept = {_column(c.field) for c in result.dropped}
        result.cancelled = [e.id for e in prepared.edits
                            if (own := {_column(n) for n in e.fields
                                         if BY_COLUMN[n].kind != "notify"})
                            and own <= kept]
    return result


def _column(name: str) -> str:
    """The lsq_tasks column an edit field is compared with."""
    return BY_COLUMN[name].compared


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


def queue(engine: Engine, task_id: str, fields: Mapping[str, Any]) -> int:
    """`lsq-sync edit`: check an edit and queue it as pending with its base; ConfigError
    says what is wrong with it (nothing is queued then)."""
    try:
        checked = check(fields)
    except InvalidEdit as exc:
        raise ConfigError(f"{exc}; nothing was queued") from None
    return edit_queue.add(engine, task_id, checked)
