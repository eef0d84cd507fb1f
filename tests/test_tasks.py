"""The RetrieveTaskByLeadId parser: strict, and never a crash on any JSON."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsq_sync.errors import BadRecord
from lsq_sync.tasks import parse_date, parse_reminder, parse_task_list

SEED_BODY = {"RecordCount": 2, "TaskList": [
    {"TaskID": "3570a2b8-4363-11e6-b61b-22000aa8e760", "Name": "Follow Up With New Lead",
     "Description": "This is test task.", "DueDate": "2016-10-20 01:30:00",
     "CreatedOn": "2016-07-06 10:20:05", "OwnerID": "190e7b6f-39da-11e6-b61b-22000aa8e760",
     "OwnerName": "User lead", "CreatedBy": "7cf19f34-21d6-11e6-8091-02b01d637af7",
     "CreatedByName": "swesh kumar", "Status": "Pending", "Reminder": "20"},
    {"TaskID": "ecd28d9b-4443-11e6-b61b-22000aa8e760", "Name": "New Talk to the Customer Task",
     "Description": "Good going", "DueDate": "2016-07-11 10:12:45.000",
     "CreatedOn": "2016-07-07 13:08:40", "OwnerID": "190e7b6f-39da-11e6-b61b-22000aa8e760",
     "OwnerName": "User lead", "CreatedBy": "7cf19f34-21d6-11e6-8091-02b01d637af7",
     "CreatedByName": "swesh kumar", "Status": "Pending", "Reminder": "15"}]}


def test_the_seed_page_example_parses() -> None:
    rows = parse_task_list(SEED_BODY, "lead-1")
    assert [r["task_id"] for r in rows] == ["3570a2b8-4363-11e6-b61b-22000aa8e760",
                                            "ecd28d9b-4443-11e6-b61b-22000aa8e760"]
    first, second = rows
    assert first["due_date"] == datetime(2016, 10, 20, 1, 30, tzinfo=UTC)
    assert second["due_date"] == datetime(2016, 7, 11, 10, 12, 45, tzinfo=UTC)
    assert first["reminder_minutes"] == 20 and second["reminder_minutes"] == 15
    assert first["owner_name"] == "User lead" and first["status"] == "Pending"
    assert first["raw"] == SEED_BODY["TaskList"][0]
    assert first["lead_id"] == "lead-1"


@pytest.mark.parametrize("body", [{"RecordCount": 0}, {"RecordCount": 0, "TaskList": []},
                                  {"RecordCount": 0, "TaskList": None}])
def test_an_empty_lead_comes_in_several_shapes(body: dict[str, Any]) -> None:
    assert parse_task_list(body, "x") == []


@pytest.mark.parametrize(("body", "message"), [
    ([], "not an object"),
    ({"TaskList": {}}, "TaskList is dict"),
    ({"TaskList": [{"Name": "no id"}]}, "no usable TaskID"),
    ({"TaskList": [{"TaskID": "t", "Name": 5}]}, "Name is int"),
    ({"TaskList": [{"TaskID": "t", "DueDate": "tomorrow"}]}, "is not a date"),
    ({"TaskList": [{"TaskID": "t", "Reminder": "soon"}]}, "not a whole number"),
    ({"TaskList": [{"TaskID": "t", "Reminder": {"m": 1}}]}, "not a whole number"),
    ({"RecordCount": 3, "TaskList": [{"TaskID": "t"}]}, "RecordCount is 3"),
    ({"RecordCount": "2", "TaskList": []}, "RecordCount is str"),
])
def test_malformed_answers_are_refused_with_a_reason(body: Any, message: str) -> None:
    with pytest.raises(BadRecord, match=message):
        parse_task_list(body, "lead")


def test_dates() -> None:
    assert parse_date("0001-01-01 00:00:00.000") is None
    assert parse_date("") is None and parse_date(None) is None
    assert parse_date("2024-02-29 23:59:59") == datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC)
    assert parse_date("2024-01-01T05:30:00+05:30") == datetime(2024, 1, 1, tzinfo=UTC)
    with pytest.raises(BadRecord):
        parse_date("2023-02-29 10:00:00")


def test_reminders() -> None:
    assert parse_reminder("20") == 20 and parse_reminder(30) == 30
    assert parse_reminder("") is None and parse_reminder(None) is None
    with pytest.raises(BadRecord):
        parse_reminder(True)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                max_size=5),
    max_leaves=25)
task_like = st.fixed_dictionaries({}, optional={
    "TaskID": json_values | st.uuids().map(str), "Name": json_values, "DueDate": json_values
    | st.just("2024-01-01 00:00:00"), "Reminder": json_values | st.just("5"),
    "Status": json_values, "OwnerID": json_values})


@settings(max_examples=400, deadline=None)
@given(st.one_of(json_values, st.fixed_dictionaries(
    {}, optional={"RecordCount": json_values, "TaskList": st.lists(task_like, max_size=4)
                  | json_values})))
def test_any_json_is_a_clean_error_or_valid_tasks(body: Any) -> None:
    try:
        rows = parse_task_list(body, "lead")
    except BadRecord as exc:
        assert str(exc)
        return
    for row in rows:
        assert isinstance(row["task_id"], str) and row["task_id"]
        assert row["reminder_minutes"] is None or isinstance(row["reminder_minutes"], int)
        for key in ("due_date", "created_on"):
            assert row[key] is None or row[key].tzinfo is UTC
