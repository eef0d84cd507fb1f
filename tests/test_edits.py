"""Edit validation, merging and the Update body: pure functions, fuzzed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsq_sync.edits import EDIT_FIELDS, InvalidEdit, body, check, merge, prepare

GUID = "1a50c565-8525-11ea-a93b-0aa4c559f4ca"
TASK = {"task_id": "t-1", "lead_id": "l-1", "name": "Call", "description": "d",
        "due_date": datetime(2026, 5, 1, 9, 30, tzinfo=UTC), "reminder_minutes": 15,
        "owner_id": GUID, "deleted_at": None}


@pytest.mark.parametrize(("edit", "message"), [
    ({"due_date": "2026-02-30 10:00:00"}, "not a real date"),
    ({"due_date": "2026-02-03"}, "YYYY-MM-DD HH:MM:SS"),
    ({"due_date": 20260203}, "must be text"),
    ({"reminder_minutes": -1}, "between 0 and"),
    ({"reminder_minutes": "soon"}, "not a whole number"),
    ({"reminder_minutes": True}, "not a whole number"),
    ({"notify_by": "1111"}, r"1100 \(email the owner\) or 1000"),
    ({"owner_id": "bob"}, "not a GUID"),
    ({"owner_email": "bob@"}, "not an email address"),
    ({"owner_id": GUID, "owner_email": "a@b.co"}, "both set"),
    ({"name": "   "}, "blank"),
    ({}, "changes nothing"),
])
def test_invalid_edits_say_why(edit: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidEdit, match=message):
        check(edit)


def test_valid_edit_is_normalised() -> None:
    assert check({"name": "N", "reminder_minutes": "30", "notify_by": 1100,
                  "owner_email": " a@b.co ", "description": None}) == {
        "name": "N", "reminder_minutes": 30, "notify_by": "1100", "owner_email": "a@b.co"}


def test_later_edits_win_and_the_owner_is_one_choice() -> None:
    merged = merge([{"name": "A", "owner_id": GUID}, {"name": "B", "reminder_minutes": 5},
                    {"owner_email": "x@y.co"}])
    assert merged == {"name": "B", "reminder_minutes": 5, "owner_email": "x@y.co"}


def test_body_lays_the_edit_over_the_last_synced_task() -> None:
    payload = body(TASK, {"name": "New"}, "1000")
    assert payload == {"UserTaskId": "t-1", "Name": "New", "Description": "d",
                       "RelatedEntity": 1, "RelatedEntityId": "l-1",
                       "DueDate": "2026-05-01 09:30:00", "Reminder": 15, "NotifyBy": "1000",
                       "OwnerId": GUID}
    by_email = body(TASK, {"owner_email": "x@y.co", "notify_by": "1100"}, "1000")
    assert by_email["OwnerEmailAddress"] == "x@y.co" and "OwnerId" not in by_email
    assert by_email["NotifyBy"] == "1100"


def test_prepare_rejects_unknown_and_deleted_tasks_and_bad_edits() -> None:
    rows = [{"id": 1, "name": "A"}, {"id": 2, "due_date": "nope"}, {"id": 3, "name": "C"}]
    prepared = prepare("t-1", rows, TASK, "1000")
    assert prepared.ids == [1, 3] and list(prepared.rejected) == [2]
    assert prepared.payload is not None and prepared.payload["Name"] == "C"
    unknown = prepare("t-9", rows, None, "1000")
    assert unknown.payload is None and "not in lsq_tasks" in unknown.rejected[1]
    gone = prepare("t-1", rows, {**TASK, "deleted_at": datetime.now(UTC)}, "1000")
    assert gone.payload is None and "was deleted" in gone.rejected[3]


garbage = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=40),
                    st.binary(max_size=10), st.just("2026-01-01 00:00:00"), st.just(GUID),
                    st.just("a@b.co"), st.just("1100"))


@settings(max_examples=400, deadline=None)
@given(st.fixed_dictionaries({}, optional=dict.fromkeys(EDIT_FIELDS, garbage)))
def test_any_row_is_a_clean_edit_or_a_reason(edit: dict[str, Any]) -> None:
    try:
        clean = check(edit)
    except InvalidEdit as exc:
        assert str(exc)
        return
    assert clean and set(clean) <= set(EDIT_FIELDS)
    assert body(TASK, clean, "1000")["UserTaskId"] == "t-1"
