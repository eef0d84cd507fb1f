"""LeadSquared webhook bodies: every encoding it sends, keys in any case, and what is not
a webhook said in one line."""

from __future__ import annotations

import json

import pytest

from lsq_sync.leadsquared.webhooks import BadWebhook, parse
from lsq_sync.store.hints import Hint

LEAD = "0000000a-5151-4000-8000-000000000001"
TASK = "00000001-0000-4000-9000-000000000001"


def test_json_object_list_and_nested_records() -> None:
    assert parse(json.dumps({"RelatedEntityId": LEAD, "UserTaskId": TASK,
                             "EventType": 17}).encode(), "application/json") == [
        Hint(LEAD, TASK, "17")]
    both = [{"leadid": LEAD}, {"PROSPECTID": LEAD.replace("a-", "b-")}, {"LeadId": LEAD}]
    assert parse(json.dumps(both).encode(), "application/json; charset=utf-8") == [
        Hint(LEAD), Hint(LEAD.replace("a-", "b-"))]
    nested = {"Before": {"Name": "x"}, "Current": {"TaskId": TASK, "ProspectID": LEAD}}
    assert parse(json.dumps(nested).encode(), "application/json") == [Hint(LEAD, TASK)]


def test_the_lead_key_order_is_the_documented_one() -> None:
    other = LEAD.replace("0001", "0002")
    body = {"ProspectId": other, "RelatedEntityId": LEAD}
    assert parse(json.dumps(body).encode(), "application/json")[0].lead_id == LEAD


def test_form_and_text_bodies() -> None:
    form = f"ProspectID={LEAD}&TaskID={TASK}&Event=16".encode()
    assert parse(form, "application/x-www-form-urlencoded") == [Hint(LEAD, TASK, "16")]
    assert parse(json.dumps({"LeadId": LEAD}).encode(), "text/plain") == [Hint(LEAD)]
    assert parse(form, "text/plain") == [Hint(LEAD, TASK, "16")]  # text that is a form
    assert parse(b'{"TaskId": "%s"}' % TASK.encode(), "") == [Hint(None, TASK)]


def test_the_event_from_the_url_fills_in_for_the_body() -> None:
    assert parse(json.dumps({"LeadId": LEAD}).encode(), "application/json",
                 event="7") == [Hint(LEAD, None, "7")]


@pytest.mark.parametrize(("body", "ctype", "why"), [
    (b"{not json", "application/json", "not valid JSON"),
    (b"[1, 2, 3]", "application/json", "holds no object"),
    (json.dumps({"LeadId": "42"}).encode(), "application/json", "names no lead"),
    (json.dumps({"LeadId": LEAD + "x"}).encode(), "application/json", "names no lead"),
    (json.dumps({"LeadId": "\u0660" * 36}).encode(), "application/json", "names no lead"),
    (b"\xff\xfe\x00garbage", "text/plain", "neither JSON nor a UTF-8 form"),
    (b"", "application/x-www-form-urlencoded", "neither JSON nor a form"),
    (json.dumps([{"LeadId": LEAD}] * 1001).encode(), "application/json", "more than 1000"),
])
def test_what_is_no_webhook_says_why(body: bytes, ctype: str, why: str) -> None:
    with pytest.raises(BadWebhook, match=why):
        parse(body, ctype)


def test_a_thousand_mentions_of_one_lead_are_one_hint_and_more_is_refused() -> None:
    body = "&".join([f"LeadId={LEAD}"] * 10_000).encode()
    with pytest.raises(BadWebhook, match="more than 1000 fields"):
        parse(body, "application/x-www-form-urlencoded")
    records = json.dumps([{"LeadId": LEAD, "TaskId": TASK}] * 1000).encode()
    assert parse(records, "application/json") == [Hint(LEAD, TASK)]
