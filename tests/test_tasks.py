"""The RetrieveTaskByLeadId parser: strict, and never a crash on any JSON."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsq_sync.errors import BadRecord
from lsq_sync.leadsquared.tasks import parse_date, parse_reminder, parse_task_list

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
    assert parse_reminder(" -5 ") == -5 and parse_reminder(2**31 - 1) == 2**31 - 1
    for odd in ["\u0663", "\u00b2", "1\u00b2", "+", "1e3"]:
        with pytest.raises(BadRecord, match="is not a whole number"):
            parse_reminder(odd)
    for huge in ["99999999999999999999", 2**31, -(2**31), 1e20]:
        with pytest.raises(BadRecord, match="is out of range"):
            parse_reminder(huge)


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


@pytest.mark.parametrize(("call", "message"), [
    (lambda: parse_date(5, "DueDate"), "DueDate is int, not a date string"),
    (lambda: parse_date("x" * 50, "DueDate"), f"DueDate {'x' * 40!r} is not a date"),
    (lambda: parse_reminder(True), "Reminder is a boolean, not minutes"),
    (lambda: parse_reminder("y" * 50), f"Reminder {'y' * 40!r} is not a whole number of "
                                       f"minutes"),
    (lambda: parse_task_list([], "l"), "the answer is list, not an object"),
    (lambda: parse_task_list({"TaskList": [7]}, "l"), "a task is int, not an object"),
    (lambda: parse_task_list({"TaskList": [{"TaskID": "z" * 65}]}, "l"),
     f"a task has no usable TaskID ({'z' * 40!r})"),
    (lambda: parse_task_list({"TaskList": [{"TaskID": "t\x00"}]}, "l"),
     "a task has no usable TaskID ('t\\x00')"),
    (lambda: parse_task_list({"TaskList": [{"TaskID": "t", "Name": "n" * 501}]}, "l"),
     "task t: Name is longer than 500 characters"),
    (lambda: parse_task_list({"TaskList": [{"TaskID": "t", "DueDate": "soon"}]}, "l"),
     "task t: DueDate 'soon' is not a date"),
    (lambda: parse_task_list({"TaskList": [{"TaskID": "t", "Reminder": [1]}]}, "l"),
     "task t: Reminder '[1]' is not a whole number of minutes"),
])
def test_bad_answers_say_exactly_what_is_wrong(call: Any, message: str) -> None:
    with pytest.raises(BadRecord) as caught:
        call()
    assert str(caught.value) == message


def test_dates_and_ids_at_their_bounds() -> None:
    assert parse_date("0001-01-01 00:00:00.000") is None
    assert parse_date("0002-01-01 00:00:00") == datetime(2, 1, 1, tzinfo=UTC)
    assert parse_date("2026-05-01 10:00:00+05:30") == datetime(2026, 5, 1, 4, 30, tzinfo=UTC)
    (row,) = parse_task_list({"TaskList": [{"TaskID": "i" * 64, "Name": "n" * 500,
                                             "DueDate": "2026-05-01 10:00:00"}]}, "lead")
    assert (row["task_id"], row["lead_id"], row["name"]) == ("i" * 64, "lead", "n" * 500)
    assert row["due_date"] == datetime(2026, 5, 1, 10, tzinfo=UTC)


def test_nul_characters_become_replacement_characters_everywhere() -> None:
    from lsq_sync.leadsquared.tasks import parse_tasks, without_nul
    assert without_nul("a\x00b") == ("a\ufffdb", True)
    assert without_nul("ab") == ("ab", False)
    nested = {"k\x00": ["x", {"y": "z\x00"}], "plain": 1}
    assert without_nul(nested) == ({"k\ufffd": ["x", {"y": "z\ufffd"}], "plain": 1}, True)
    clean = {"a": ["b", {"c": 2}]}
    same, found = without_nul(clean)
    assert same is clean and not found
    listed = ["q", "r\x00"]
    assert without_nul(listed) == (["q", "r\ufffd"], True)
    result = parse_tasks({"TaskList": [{"TaskID": "t1", "Name": "bad\x00name"},
                                       {"TaskID": "t2", "Name": "fine"}]}, "lead")
    assert result.cleaned == ["t1"]
    assert [r["name"] for r in result.rows] == ["bad\ufffdname", "fine"]
    assert result.rows[0]["raw"] == {"TaskID": "t1", "Name": "bad\ufffdname"}
