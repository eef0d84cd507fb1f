"""Edit validation, merging and the Update body: pure functions, fuzzed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from lsq_sync.core.merge import body, check, merge, plan, prepare
from lsq_sync.errors import InvalidEdit
from lsq_sync.store.edit_queue import EDIT_FIELDS, snapshot

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
    prepared = prepare("t-1", rows, TASK)
    assert prepared.ids == [1, 3] and list(prepared.rejected) == [2]
    decided = plan(prepared, TASK, "1000")
    assert decided.payload is not None and decided.payload["Name"] == "C"
    unknown = prepare("t-9", rows, None)
    assert unknown.ids == [] and "not in lsq_tasks" in unknown.rejected[1]
    gone = prepare("t-1", rows, {**TASK, "deleted_at": datetime.now(UTC)})
    assert gone.ids == [] and "was deleted" in gone.rejected[3]


def test_an_edit_no_check_foresaw_fails_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from lsq_sync.core import merge as edits

    real = edits.check

    def fragile(edit: dict[str, Any]) -> dict[str, Any]:
        if edit.get("name") == "boom":
            raise OverflowError("int too large to convert")
        return real(edit)

    monkeypatch.setattr(edits, "check", fragile)
    rows = [{"id": 1, "name": "A"}, {"id": 2, "name": "boom"}, {"id": 3, "name": "C"}]
    prepared = prepare("t-1", rows, TASK)
    assert prepared.ids == [1, 3]
    assert prepared.rejected == {2: "cannot read this edit (OverflowError: int too large to "
                                    "convert)"}


garbage = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=40),
                    st.binary(max_size=10), st.just("2026-01-01 00:00:00"), st.just(GUID),
                    st.just("a@b.co"), st.just("1100"))


@settings(max_examples=400, deadline=None)
@given(st.fixed_dictionaries({}, optional=dict.fromkeys(EDIT_FIELDS, garbage)))
@example({"reminder_minutes": "\u00b2"})  # '²'.isdigit() is true, int('²') fails
@example({"reminder_minutes": "\u0663"})  # int('٣') is 3
def test_any_row_is_a_clean_edit_or_a_reason(edit: dict[str, Any]) -> None:
    try:
        clean = check(edit)
    except InvalidEdit as exc:
        assert str(exc)
        return
    assert clean and set(clean) <= set(EDIT_FIELDS)
    assert body(TASK, clean, "1000")["UserTaskId"] == "t-1"


# -- the three-way merge ---------------------------------------------------------------

OTHER = "7cf19f34-21d6-11e6-8091-02b01d637af7"
BASE = snapshot(TASK)


def edits_of(*fields: dict[str, Any], base: dict[str, Any] | None = None) -> Any:
    rows = [{"id": i + 1, **f, "base": base or BASE} for i, f in enumerate(fields)]
    return prepare("t-1", rows, TASK)


def test_untouched_fields_are_sent_as_the_crm_holds_them_now() -> None:
    remote = {**TASK, "name": "Renamed in CRM", "reminder_minutes": 45, "owner_id": OTHER,
              "due_date": datetime(2027, 1, 2, 3, 4, 5, tzinfo=UTC)}
    decided = plan(edits_of({"description": "local"}), remote, "1000")
    assert decided.outcome == "send" and decided.values == {"description": "local"}
    assert decided.payload == {"UserTaskId": "t-1", "Name": "Renamed in CRM",
                               "Description": "local", "RelatedEntity": 1,
                               "RelatedEntityId": "l-1", "DueDate": "2027-01-02 03:04:05",
                               "Reminder": 45, "NotifyBy": "1000", "OwnerId": OTHER}


@pytest.mark.parametrize(("remote_name", "outcome"), [
    ("Call", "send"),            # remote = base: local wins
    ("Local", "applied"),        # remote = local: nothing to send
    ("CRM", "conflict"),         # remote differs from both
])
def test_an_edited_field_is_judged_against_base_and_remote(remote_name: str,
                                                           outcome: str) -> None:
    decided = plan(edits_of({"name": "Local"}), {**TASK, "name": remote_name}, "1000")
    assert decided.outcome == outcome
    assert (decided.payload is not None) == (outcome == "send")
    if outcome == "conflict":
        (conflict,) = decided.conflicts
        assert (conflict.field, conflict.base, conflict.remote, conflict.local) == (
            "name", "Call", "CRM", "Local")
        assert "name: base 'Call', remote 'CRM', local 'Local'" in (decided.describe() or "")


def test_on_conflict_local_sends_and_remote_keeps_the_crm_value() -> None:
    remote = {**TASK, "name": "CRM", "reminder_minutes": 99}
    prepared = edits_of({"name": "Local", "description": "new"})
    local = plan(prepared, remote, "1000", "local")
    assert local.outcome == "send" and local.payload is not None
    assert local.payload["Name"] == "Local" and local.payload["Reminder"] == 99
    assert [c.field for c in local.overwritten] == ["name"]
    kept = plan(prepared, remote, "1000", "remote")
    assert kept.outcome == "send" and kept.payload is not None
    assert kept.payload["Name"] == "CRM" and kept.payload["Description"] == "new"
    assert "kept LeadSquared's value" in (kept.describe() or "")
    only_name = plan(edits_of({"name": "Local"}), remote, "1000", "remote")
    assert only_name.outcome == "dropped" and only_name.payload is None


def test_each_field_is_judged_against_the_base_of_the_edit_that_set_it() -> None:
    # Edit 2 was made after a pull brought the CRM's new name: its base knows it.
    newer = {**BASE, "name": "CRM"}
    rows = [{"id": 1, "reminder_minutes": 5, "base": BASE},
            {"id": 2, "name": "Local", "base": newer}]
    decided = plan(prepare("t-1", rows, TASK), {**TASK, "name": "CRM"}, "1000")
    assert decided.outcome == "send" and decided.values == {"reminder_minutes": 5,
                                                            "name": "Local"}


@pytest.mark.parametrize(("remote", "outcome"), [
    ({"name": "First", "owner_id": OTHER}, "send"),   # edit 1 went out, unrecorded
    ({}, "send"),                                      # nothing went out
    ({"name": "CRM"}, "conflict"),                     # a change made in the CRM
    ({"owner_id": "00000000-0000-4000-8000-000000000000"}, "conflict"),  # likewise
])
def test_a_value_an_earlier_pending_edit_set_is_ours_not_a_crm_change(
        remote: dict[str, Any], outcome: str) -> None:
    # A run sent edit 1's Update and was killed before recording it; edit 2's base was
    # taken from lsq_tasks before edit 1 landed, so the CRM's value is edit 1's.
    rows = [{"id": 1, "name": "First", "owner_id": OTHER, "base": BASE},
            {"id": 2, "name": "Second", "owner_email": "x@y.co", "base": BASE}]
    decided = plan(prepare("t-1", rows, TASK), {**TASK, **remote}, "1000")
    assert decided.outcome == outcome
    if outcome == "send":
        assert decided.values == {"name": "Second", "owner_email": "x@y.co"}
    else:
        (conflict,) = decided.conflicts
        assert conflict.field == next(iter(remote)).replace("owner_id", "owner_email")


def test_a_task_gone_from_its_lead_is_held() -> None:
    decided = plan(edits_of({"reminder_minutes": 5}), None, "1000")
    assert decided.outcome == "gone" and decided.payload is None
    assert "no longer under lead l-1" in (decided.describe() or "")


def test_owner_changes_conflict_when_the_crm_reassigned_the_task() -> None:
    remote = {**TASK, "owner_id": OTHER}
    by_email = plan(edits_of({"owner_email": "x@y.co"}), remote, "1000")
    assert by_email.outcome == "conflict" and by_email.conflicts[0].field == "owner_email"
    same_owner = plan(edits_of({"owner_email": "x@y.co"}), TASK, "1000")
    assert same_owner.payload is not None
    assert same_owner.payload["OwnerEmailAddress"] == "x@y.co" and \
        "OwnerId" not in same_owner.payload
    # GUIDs compare without regard to case.
    upper = plan(edits_of({"owner_id": OTHER}), {**TASK, "owner_id": OTHER.upper()}, "1000")
    assert upper.outcome == "applied"


def test_an_edit_without_a_base_takes_the_synced_state_once() -> None:
    before = datetime.now(UTC)
    prepared = prepare("t-1", [{"id": 7, "name": "x", "base": None}], TASK)
    (taken,) = prepared.new_bases.values()
    assert list(prepared.new_bases) == [7] and prepared.edits[0].base == taken
    assert {k: v for k, v in taken.items() if k != "taken_at"} == BASE
    assert prepared.edits[0].since is not None and before <= prepared.edits[0].since
    assert datetime.fromisoformat(taken["taken_at"]) == prepared.edits[0].since
    recorded = prepare("t-1", [{"id": 7, "name": "x", "base": BASE}], TASK)
    assert recorded.new_bases == {}


SOME_OWNER = "190e7b6f-39da-11e6-b61b-22000aa8e760"
LONG = "x" * 60


@pytest.mark.parametrize(("edit", "message"), [
    ({"name": b"\xff"}, "name is not text"),
    ({"name": 5}, "name must be text, not int"),
    ({"name": "  "}, "name is blank; set a name or leave it NULL"),
    ({"name": "n" * 501}, "name is longer than 500 characters"),
    ({"description": 1.5}, "description must be text, not float"),
    ({"due_date": 7}, "due_date must be text, not int"),
    ({"due_date": LONG}, f"due_date {'x' * 40!r} is not YYYY-MM-DD HH:MM:SS (UTC)"),
    ({"due_date": "2027-02-30 10:00:00"}, "due_date '2027-02-30 10:00:00' is not a real date"),
    ({"reminder_minutes": LONG}, f"reminder_minutes {'x' * 20!r} is not a whole number"),
    ({"reminder_minutes": True}, "reminder_minutes 'True' is not a whole number"),
    ({"reminder_minutes": -1}, "reminder_minutes -1 must be between 0 and 527040"),
    ({"reminder_minutes": 527041}, "reminder_minutes 527041 must be between 0 and 527040"),
    ({"notify_by": LONG}, f"notify_by {'x' * 20!r} must be 1100 (email the owner) or 1000 "
                          f"(no notification)"),
    ({"owner_id": SOME_OWNER, "owner_email": "a@b.co"},
     "owner_id and owner_email are both set; give one of them"),
    ({"owner_id": 3}, "owner_id must be text, not int"),
    ({"owner_id": LONG}, f"owner_id {'x' * 40!r} is not a GUID"),
    ({"owner_email": 3}, "owner_email must be text, not int"),
    ({"owner_email": LONG}, f"owner_email {'x' * 40!r} is not an email address"),
    ({"owner_email": "a@b." + "c" * 252}, f"owner_email {('a@b.' + 'c' * 36)!r} is not an "
                                          f"email address"),
    ({"name": None, "description": None}, "the edit changes nothing (no field is set)"),
])
def test_check_says_exactly_what_is_wrong(edit: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidEdit) as caught:
        check(edit)
    assert str(caught.value) == message


def test_check_keeps_every_good_value_at_its_bounds() -> None:
    assert check({"name": "n" * 500, "description": bytearray(b"d\xc3\xa9"),
                  "due_date": " 2027-01-31 23:59:59 ", "reminder_minutes": " 0 ",
                  "notify_by": 1100, "owner_email": " " + "a@b." + "c" * 251 + " "}) == {
        "name": "n" * 500, "description": "dé", "due_date": "2027-01-31 23:59:59",
        "reminder_minutes": 0, "notify_by": "1100", "owner_email": "a@b." + "c" * 251}
    assert check({"reminder_minutes": 527040, "owner_id": f" {SOME_OWNER} "}) == {
        "reminder_minutes": 527040, "owner_id": SOME_OWNER}
    assert check({"notify_by": " 1000 "}) == {"notify_by": "1000"}


def test_the_owner_switches_either_way_and_other_fields_keep_it() -> None:
    assert merge([{"owner_email": "x@y.co"}, {"owner_id": GUID}]) == {"owner_id": GUID}
    assert merge([{"owner_id": GUID}, {"name": "N"}]) == {"owner_id": GUID, "name": "N"}
    assert merge([{"owner_email": "x@y.co"}, {"name": "N"}]) == {"owner_email": "x@y.co",
                                                                 "name": "N"}


def test_body_takes_each_edited_field_and_keeps_the_rest() -> None:
    other = "2b60d676-9636-22fb-b04c-1bb5d66a05db"
    payload = body(TASK, {"due_date": "2027-01-02 03:04:05", "reminder_minutes": 0,
                          "owner_id": other, "description": ""}, "1000")
    assert payload == {"UserTaskId": "t-1", "Name": "Call", "Description": "",
                       "RelatedEntity": 1, "RelatedEntityId": "l-1",
                       "DueDate": "2027-01-02 03:04:05", "Reminder": 0, "NotifyBy": "1000",
                       "OwnerId": other}
    bare = body({**TASK, "description": None, "due_date": None}, {}, "1100")
    assert "Description" not in bare and "DueDate" not in bare  # nulls are left out


def test_equal_enough_values_are_no_change_and_no_conflict() -> None:
    # The CRM returns ids in other case, and "" for an empty text it was given as null.
    remote = {**TASK, "owner_id": GUID.upper(), "lead_id": "L-1", "description": ""}
    prepared = edits_of({"owner_id": GUID}, {"description": ""},
                        base={**BASE, "description": None})
    decided = plan(prepared, remote, "1000")
    assert decided.outcome == "applied" and decided.values == {}
    # ...but the case of a name is a change.
    assert plan(edits_of({"name": "CALL"}), TASK, "1000").values == {"name": "CALL"}
    moved = plan(edits_of({"name": "x"}), {**TASK, "lead_id": "l-2"}, "1000")
    assert moved.payload is not None and moved.payload["RelatedEntityId"] == "l-2"
    # Other fields compare exactly: a reminder of 0 is not "no reminder".
    zero = plan(edits_of({"reminder_minutes": 0}, base={**BASE, "reminder_minutes": None}),
                {**TASK, "reminder_minutes": None}, "1000")
    assert zero.values == {"reminder_minutes": 0}


def test_prepare_and_describe_say_exactly_why() -> None:
    rows = [{"id": 7, "name": "A"}, {"id": 8, "due_date": "nope"}]
    prepared = prepare("t-1", rows, TASK)
    assert prepared.task_id == "t-1" and prepared.synced == TASK and prepared.lead_id == "l-1"
    assert prepared.rejected == {8: "due_date 'nope' is not YYYY-MM-DD HH:MM:SS (UTC)"}
    gone = prepare("t-1", rows, {**TASK, "deleted_at": datetime(2026, 6, 1, 8, 0, tzinfo=UTC)})
    assert gone.rejected == {7: "task t-1 was deleted in LeadSquared (2026-06-01 08:00:00 UTC)",
                             8: "task t-1 was deleted in LeadSquared (2026-06-01 08:00:00 UTC)"}
    assert gone.synced is not None and gone.task_id == "t-1"
    unknown = prepare("t-9", rows[:1], None)
    assert unknown.rejected == {7: "task t-9 is not in lsq_tasks; pull its lead first (or "
                                   "check the id)"} and unknown.synced is None
    held = plan(edits_of({"name": "Mine"}, {"description": "also"}),
                {**TASK, "name": "Theirs", "description": "other"}, "1000")
    assert held.describe() == (
        "conflict with a change in LeadSquared (on_conflict = skip): name: base 'Call', "
        "remote 'Theirs', local 'Mine'; description: base 'd', remote 'other', local 'also'; "
        "`lsq-sync edits retry ID` sends it against the new state")
    kept = plan(edits_of({"name": "Mine"}), {**TASK, "name": "Theirs"}, "1000",
                on_conflict="remote")
    assert kept.describe() == ("kept LeadSquared's value (on_conflict = remote): name: base "
                               "'Call', remote 'Theirs', local 'Mine'")
    assert plan(edits_of({"name": "Mine"}), TASK, "1000").describe() is None
    lost = plan(edits_of({"name": "x"}), None, "1000")
    assert lost.describe() == ("task t-1 is no longer under lead l-1 in LeadSquared (deleted "
                               "or moved); nothing was sent; pull, then `lsq-sync edits retry`")


def test_plan_merges_owner_switches_notify_and_every_field() -> None:
    other = "2b60d676-9636-22fb-b04c-1bb5d66a05db"
    # An owner by email, then by id: the id goes; then a notify_by and more fields later.
    decided = plan(edits_of({"owner_email": "x@y.co"}, {"owner_id": other},
                            {"notify_by": "1100", "name": "N"}, {"reminder_minutes": 5}),
                   TASK, "1000")
    assert decided.task_id == "t-1" and decided.ids == [1, 2, 3, 4]
    assert decided.values == {"owner_id": other, "name": "N", "reminder_minutes": 5}
    assert decided.payload is not None and decided.payload["NotifyBy"] == "1100"
    assert decided.payload["OwnerId"] == other and "OwnerEmailAddress" not in decided.payload
    back = plan(edits_of({"owner_id": other}, {"owner_email": "x@y.co"}), TASK, "1000")
    assert back.values == {"owner_email": "x@y.co"}  # sent, though it matches no id
    assert back.payload is not None and back.payload["OwnerEmailAddress"] == "x@y.co"
    plain = plan(edits_of({"name": "N"}), TASK, "1100")
    assert plain.payload is not None and plain.payload["NotifyBy"] == "1100"
    # The default is skip: a conflicting field holds the task.
    assert plan(edits_of({"name": "Mine"}), {**TASK, "name": "Theirs"}, "1000").outcome == \
        "conflict"
    kept = plan(edits_of({"name": "Mine"}, {"reminder_minutes": 1}),
                {**TASK, "name": "Theirs"}, "1000", on_conflict="remote")
    assert [c.field for c in kept.dropped] == ["name"] and kept.values == {"reminder_minutes": 1}


# -- the window of "ours": it starts at the base an edit is judged against ---------------

def sent(name: str, at: datetime) -> dict[str, Any]:
    return {"name": name, "sent_at": at}


def test_a_value_sent_before_the_base_was_taken_is_a_crm_change() -> None:
    # Edit 1 sent "A" at 10:00. A CRM user set the name to "A" again later; edit 2 was
    # retried at 12:00 and took a fresh base ("B", from a pull). "A" is the CRM's doing.
    at = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    base = {**BASE, "name": "B", "taken_at": at.isoformat()}
    rows = [{"id": 2, "name": "Mine", "base": base,
             "created_at": datetime(2026, 12, 1, 9, 59, tzinfo=UTC)}]
    landed = [sent("A", datetime(2026, 12, 1, 10, 0, tzinfo=UTC))]
    decided = plan(prepare("t-1", rows, TASK, landed), {**TASK, "name": "A"}, "1000")
    assert decided.outcome == "conflict"
    # Sent within LANDING of the base: maybe not in lsq_tasks yet when it was taken: ours.
    landed = [sent("A", at - timedelta(seconds=50))]
    decided = plan(prepare("t-1", rows, TASK, landed), {**TASK, "name": "A"}, "1000")
    assert decided.outcome == "send" and decided.values == {"name": "Mine"}
    # Without taken_at the base dates from created_at (an edit another system inserted).
    rows = [{**rows[0], "base": BASE}]
    landed = [sent("A", datetime(2026, 12, 1, 10, 0, tzinfo=UTC))]
    decided = plan(prepare("t-1", rows, TASK, landed), {**TASK, "name": "A"}, "1000")
    assert decided.outcome == "send"


def test_on_conflict_remote_cancels_the_edits_it_kept_nothing_of() -> None:
    rows = [{"id": 1, "name": "Mine", "base": BASE},
            {"id": 2, "description": "mine too", "base": BASE},
            {"id": 3, "name": "Mine again", "reminder_minutes": 5, "base": BASE},
            {"id": 4, "notify_by": "1100", "base": BASE}]
    remote = {**TASK, "name": "Theirs"}
    decided = plan(prepare("t-1", rows, TASK), remote, "1000", on_conflict="remote")
    assert decided.outcome == "send"
    assert decided.values == {"description": "mine too", "reminder_minutes": 5}
    assert decided.cancelled == [1]  # 3 sent its reminder; 4 its NotifyBy
    assert decided.payload is not None and decided.payload["Name"] == "Theirs"


def test_a_placeholder_due_date_is_sent_as_the_crm_holds_it() -> None:
    placeholder = "0001-01-01 00:00:00.000"
    remote = {**TASK, "due_date": None, "raw": {"DueDate": placeholder}}
    decided = plan(edits_of({"name": "New"}), remote, "1000")
    assert decided.payload is not None and decided.payload["DueDate"] == placeholder
    edited = plan(edits_of({"due_date": "2027-01-01 10:00:00"},
                           base={**BASE, "due_date": None}), remote, "1000")
    assert edited.payload is not None and edited.payload["DueDate"] == "2027-01-01 10:00:00"


def test_values_compare_by_their_kind() -> None:
    from lsq_sync.core.merge import _same
    assert _same("lead_id", OTHER.upper(), f" {OTHER} ")      # a GUID in any case
    assert _same("owner_id", OTHER.upper(), OTHER)
    assert _same("name", "", None) and _same("description", None, "")  # empty text alike
    assert not _same("name", "a", "A")
    assert _same("reminder_minutes", 5, 5) and not _same("reminder_minutes", 0, None)


def test_check_takes_the_fields_in_order_and_the_owner_as_one_choice() -> None:
    with pytest.raises(InvalidEdit, match="name is blank"):  # name comes first
        check({"name": " ", "owner_id": OTHER, "owner_email": "a@b.co"})
    with pytest.raises(InvalidEdit, match="owner_id and owner_email are both set"):
        check({"owner_id": "not-a-guid", "owner_email": "a@b.co"})


def test_each_field_of_an_edit_is_merged_after_one_that_needs_nothing() -> None:
    remote = {**TASK}
    decided = plan(edits_of({"name": TASK["name"], "description": "new",
                             "notify_by": "1100", "owner_id": OTHER}), remote, "1000")
    assert decided.values == {"description": "new", "owner_id": OTHER}
    assert decided.payload is not None and decided.payload["NotifyBy"] == "1100"


def test_a_sent_edit_at_the_landing_edge_is_ours() -> None:
    from lsq_sync.core.merge import LANDING
    at = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    rows = [{"id": 2, "name": "Mine", "base": {**BASE, "taken_at": at.isoformat()}}]
    landed = [{"name": "Bad", "reminder_minutes": "soon", "sent_at": at},  # fails its check
              sent("A", at - LANDING)]                                     # just in time
    decided = plan(prepare("t-1", rows, TASK, landed), {**TASK, "name": "A"}, "1000")
    assert decided.outcome == "send" and decided.values == {"name": "Mine"}
