"""The simulator is faithful to lsq-api.md: shapes, auth, the limit, Update validation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from lsq_sync.testing import OWNERS, SimState, Simulator

RETRIEVE = "/v2/LeadManagement.svc/RetrieveTaskByLeadId"
UPDATE = "/v2/Task.svc/Update"


def client(sim: Simulator) -> httpx.Client:
    return httpx.Client(base_url=sim.url, timeout=5, headers={
        "x-LSQ-AccessKey": sim.cfg.access_key, "x-LSQ-SecretKey": sim.cfg.secret_key})


def test_data_is_deterministic_and_shaped_like_the_seed_page(sim: Simulator) -> None:
    other = SimState(sim.cfg)
    ids = list(sim.state.lead_ids())
    assert [sim.state.tasks_of(i) for i in ids] == [other.tasks_of(i) for i in ids]
    with client(sim) as http:
        bodies = [http.get(RETRIEVE, params={"leadId": i}).json() for i in ids]
    tasks = [t for b in bodies for t in b.get("TaskList", [])]
    assert tasks and all(isinstance(t["Reminder"], str) for t in tasks)
    assert any(t["DueDate"].endswith(".000") for t in tasks)
    assert any(len(t["DueDate"]) == 19 for t in tasks)
    empty = [b for b in bodies if b["RecordCount"] == 0]
    assert any("TaskList" not in b for b in empty) and any(b.get("TaskList") == [] for b in empty)
    assert set(tasks[0]) == {"TaskID", "Name", "Description", "DueDate", "CreatedOn", "OwnerID",
                             "OwnerName", "CreatedBy", "CreatedByName", "Status", "Reminder"}


def test_unknown_lead_is_an_empty_answer(sim: Simulator) -> None:
    with client(sim) as http:
        body = http.get(RETRIEVE, params={"leadId": "no-such-lead"}).json()
    assert body["RecordCount"] == 0


@pytest.mark.parametrize("status", [429, 200, 403])
def test_the_limit_is_enforced_over_a_sliding_window(
        status: int, make_sim: Callable[..., Simulator]) -> None:
    sim = make_sim(rate_calls=5, rate_period_s=60, throttle_status=status)
    with client(sim) as http:
        answers = [http.get(RETRIEVE, params={"leadId": "x"}) for _ in range(8)]
    assert [a.status_code for a in answers[:5]] == [200] * 5
    for answer in answers[5:]:
        assert answer.status_code == status
        assert answer.json()["ExceptionType"] == "MXAPIRateLimitExceededException"
        assert "exceeded the limit of 5 in 60 second(s)" in answer.json()["ExceptionMessage"]
    stats = sim.meter.snapshot()
    assert stats["throttled"] == 3 and stats["busiest_window"] == 5


def test_wrong_keys_get_401(sim: Simulator) -> None:
    with httpx.Client(base_url=sim.url) as http:
        answer = http.get(RETRIEVE, params={"leadId": "x", "accessKey": "a", "secretKey": "b"})
    assert answer.status_code == 401 and answer.json()["Status"] == "Error"


def update(sim: Simulator, body: Any) -> httpx.Response:
    with client(sim) as http:
        return http.post(UPDATE, json=body)


def a_task(sim: Simulator) -> dict[str, Any]:
    lead = next(i for i in sim.state.lead_ids() if sim.state.tasks_of(i))
    return {**sim.state.tasks_of(lead)[0], "_lead": lead}


def test_update_applies_and_the_next_read_shows_it(sim: Simulator) -> None:
    task = a_task(sim)
    answer = update(sim, {"UserTaskId": task["TaskID"], "Name": "New name",
                          "DueDate": "2027-01-02 03:04:05", "Reminder": 10,
                          "NotifyBy": "1100", "OwnerId": OWNERS[2][0],
                          "RelatedEntity": 1, "RelatedEntityId": task["_lead"]})
    assert answer.status_code == 200 and answer.json()["Status"] == "Success"
    assert answer.json()["Message"]["AffectedRows"] == 1
    now = sim.state.task(task["TaskID"])
    assert now is not None
    assert (now["Name"], now["DueDate"], now["Reminder"]) == ("New name",
                                                              "2027-01-02 03:04:05", "10")
    assert now["OwnerName"] == OWNERS[2][1]
    assert sim.state.update_calls[task["TaskID"]] == 1


@pytest.mark.parametrize(("patch", "kind"), [
    ({"DueDate": "2027-13-45"}, "MXInvalidDateTimeFormatException"),
    ({"DueDate": "tomorrow"}, "MXInvalidDateTimeFormatException"),
    ({"Reminder": -5}, "MXInvalidInputException"),
    ({"NotifyBy": "1234"}, "MXInvalidInputException"),
    ({"OwnerId": "00000000-0000-0000-0000-000000000000"}, "MXInvalidUserException"),
    ({"OwnerEmailAddress": "nobody@example.com"}, "MXInvalidUserException"),
    ({"UserTaskId": "ffffffff-0000-4000-9000-000000000001"}, "MXInvalidEntityException"),
])
def test_update_rejects_like_the_api(sim: Simulator, patch: dict[str, Any], kind: str) -> None:
    task = a_task(sim)
    answer = update(sim, {"UserTaskId": task["TaskID"], **patch})
    assert answer.status_code == 500
    assert answer.json()["ExceptionType"] == kind
    assert sim.state.task(task["TaskID"]) == {k: v for k, v in task.items() if k != "_lead"}


def test_faults_are_served(make_sim: Callable[..., Simulator]) -> None:
    from lsq_sync.testing import Faults
    sim = make_sim(faults=Faults(bare_500=0.5, html_502=0.5))
    with client(sim) as http:
        codes = {http.get(RETRIEVE, params={"leadId": "x"}).status_code for _ in range(30)}
    assert codes == {500, 502}
