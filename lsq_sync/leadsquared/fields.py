"""A task's fields, one row each: its key in RetrieveTaskByLeadId's answer, its key in
Task.svc/Update's body, its column, its kind (how a value is read and checked) and its
`lsq-sync edit` option. Parsing, the Update body, the merge, the edit checks and the
edit command all read this table: an editable field is a row here plus its columns (a
migration)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["text", "date", "minutes", "guid", "email", "notify"]


@dataclass(frozen=True)
class Field:
    column: str                 # lsq_tasks's column (an edit-only field: lsq_task_edits's)
    api: str | None             # the key RetrieveTaskByLeadId answers with (None: edit only)
    update: str | None = None   # the key Task.svc/Update takes (None: not editable)
    kind: Kind = "text"
    judged_as: str | None = None  # the lsq_tasks column an edit of it is merged against
    required: bool = False      # an edit may not set it blank
    option: str | None = None   # `lsq-sync edit`'s option for it
    metavar: str | None = None
    help: str = ""

    @property
    def compared(self) -> str:
        """The lsq_tasks column its value is compared with in the merge."""
        return self.judged_as or self.column


FIELDS: tuple[Field, ...] = (
    Field("name", "Name", "Name", required=True, option="--name", help="New name."),
    Field("description", "Description", "Description", option="--description",
          help="New description."),
    Field("due_date", "DueDate", "DueDate", "date", option="--due",
          metavar='"YYYY-MM-DD HH:MM[:SS]"',
          help="New due date, in UTC (or with an offset: 2026-02-01T10:00+05:30)."),
    Field("reminder_minutes", "Reminder", "Reminder", "minutes", option="--reminder",
          metavar="MIN", help="Reminder, minutes before due."),
    Field("notify_by", None, "NotifyBy", "notify", option="--notify/--no-notify",
          help="Email the owner about the change (NotifyBy 1100) or not (1000). "
               "Default: [push].notify_by."),
    Field("owner_id", "OwnerID", "OwnerId", "guid", option="--owner-id", metavar="ID",
          help="New owner by user id (GUID)."),
    Field("owner_email", None, "OwnerEmailAddress", "email", judged_as="owner_id",
          option="--owner-email", metavar="EMAIL", help="New owner by email address."),
    Field("owner_name", "OwnerName"),
    Field("created_by", "CreatedBy"),
    Field("created_by_name", "CreatedByName"),
    Field("status", "Status"),
    Field("created_on", "CreatedOn", kind="date"),
)

READ = tuple(f for f in FIELDS if f.api is not None)          # parsed from an answer
EDITABLE = tuple(f for f in FIELDS if f.update is not None)    # what an edit may carry
BY_COLUMN = {f.column: f for f in FIELDS}
# The two ways to name an owner: an edit gives one of them, a later one replaces it.
OWNER = tuple(f.column for f in EDITABLE if f.compared == "owner_id")
NOTIFY = next(f.column for f in EDITABLE if f.kind == "notify")  # not a task's, an edit's
