"""The API client against httpx.MockTransport: every error class, auth, and redaction."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from lsq_sync.config import from_mapping
from lsq_sync.errors import (
    AuthError,
    RejectedError,
    ThrottledError,
    TransientError,
    UnreachableError,
)
from lsq_sync.leadsquared.client import LsqClient, classify
from lsq_sync.leadsquared.ratelimit import RateLimiter

ACCESS = "u$a1b2c3d4e5f6$abc"
SECRET = "s3cr3t-value-xyz"
LEAD = "00000001-5151-4000-8000-000000000001"
GOOD = {"RecordCount": 1, "TaskList": [{"TaskID": "t-1", "Name": "Call", "Reminder": "5"}]}
THROTTLE = {"Status": "Error", "ExceptionType": "MXAPIRateLimitExceededException",
            "ExceptionMessage": "API calls exceeded the limit of 10 in 5 second(s)"}


class FakeTime:
    """A clock that moves only when someone sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def make(handler: Callable[[httpx.Request], httpx.Response], **lsq: Any
         ) -> tuple[LsqClient, list[httpx.Request], FakeTime]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    cfg = from_mapping({"lsq": {"base_url": "https://api-in21.leadsquared.com",
                                "access_key": ACCESS, "secret_key": SECRET,
                                "max_attempts": 3, **lsq}}, env={})
    fake = FakeTime()
    limiter = RateLimiter(cfg.lsq.rate_limit_calls, cfg.lsq.rate_limit_period_s,
                          clock=fake.clock, sleep=fake.sleep)
    return LsqClient(cfg.lsq, limiter, transport=httpx.MockTransport(record)), seen, fake


def answers(*responses: httpx.Response | Exception) -> Callable[[httpx.Request], httpx.Response]:
    queue = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        item = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(item, Exception):
            raise item
        return item

    return handler


def ok() -> httpx.Response:
    return httpx.Response(200, json=GOOD)


def test_header_auth_keeps_keys_out_of_the_url() -> None:
    client, seen, _ = make(answers(ok()))
    rows = client.retrieve_tasks(LEAD)
    assert rows[0]["task_id"] == "t-1"
    request = seen[0]
    assert request.headers["x-LSQ-AccessKey"] == ACCESS
    assert request.headers["x-LSQ-SecretKey"] == SECRET
    assert ACCESS not in str(request.url) and "accessKey" not in str(request.url)
    assert request.url.path == "/v2/LeadManagement.svc/RetrieveTaskByLeadId"
    assert request.url.params["leadId"] == LEAD


def test_query_auth_encodes_the_dollar() -> None:
    client, seen, _ = make(answers(ok()), auth="query")
    client.retrieve_tasks(LEAD)
    raw = seen[0].url.query.decode()
    assert "accessKey=u%24a1b2c3d4e5f6%24abc" in raw
    assert seen[0].url.params["accessKey"] == ACCESS
    assert seen[0].url.params["secretKey"] == SECRET
    assert "x-LSQ-AccessKey" not in seen[0].headers


@pytest.mark.parametrize("status", [200, 403, 429])
def test_throttling_is_waited_out_whatever_the_status(status: int) -> None:
    client, seen, fake = make(answers(httpx.Response(status, json=THROTTLE),
                                      httpx.Response(status, json=THROTTLE), ok()),
                              max_attempts=1)
    assert client.retrieve_tasks(LEAD)[0]["task_id"] == "t-1"
    assert len(seen) == 3  # two throttles did not use up the single attempt
    assert client.stats.throttled == 2 and client.stats.calls == 3
    assert client.limiter.rate == 2.0  # the stated 10 in 5 s, lower than 25 in 5 s
    assert fake.now == pytest.approx(1.5)  # paused one slot (0.5 s), then two


def test_a_bare_429_is_throttling_too() -> None:
    client, seen, _ = make(answers(httpx.Response(429, text="Too Many Requests"), ok()),
                           max_attempts=1)
    client.retrieve_tasks(LEAD)
    assert client.stats.throttled == 1 and len(seen) == 2


def test_endless_throttling_ends_as_a_transient_failure() -> None:
    client, seen, _ = make(answers(httpx.Response(429, json=THROTTLE)), max_throttle_waits=4)
    with pytest.raises(TransientError, match="still rate-limited after 4 waits"):
        client.retrieve_tasks(LEAD)
    assert len(seen) == 4


@pytest.mark.parametrize("failure", [
    httpx.Response(500, text="Internal Server Error"),
    httpx.Response(502, text="<html>Bad Gateway</html>"),
    httpx.Response(503),
    httpx.Response(200, text='{"RecordCount": 1, "TaskL'),
    httpx.ReadTimeout("timed out"),
    httpx.ConnectError("connection refused"),
    httpx.RemoteProtocolError("peer closed connection without sending complete message body"),
])
def test_transient_failures_are_retried_with_backoff(failure: Any) -> None:
    client, seen, fake = make(answers(failure, failure, ok()))
    assert client.retrieve_tasks(LEAD)[0]["task_id"] == "t-1"
    assert len(seen) == 3
    assert client.stats.retries == 2
    first, second = fake.slept
    assert 0.5 <= first <= 1.0 and 1.0 <= second <= 2.0  # doubling, with jitter


def test_a_stop_during_a_backoff_ends_the_call_at_once() -> None:
    """A signal while a retry waits: the wait ends, no further attempt is made."""
    from lsq_sync.errors import Stopped
    client, seen, fake = make(answers(httpx.Response(503), ok()))
    real_sleep = fake.sleep

    def signal_during(seconds: float) -> None:
        real_sleep(seconds)
        client.limiter.stop.set()

    client.limiter._sleep = signal_during
    with pytest.raises(Stopped):
        client.retrieve_tasks(LEAD)
    assert len(seen) == 1 and client.stats.retries == 1


def test_transient_failures_give_up_after_max_attempts() -> None:
    client, seen, _ = make(answers(httpx.Response(500)))
    with pytest.raises(TransientError, match="gave up after 3 attempts"):
        client.retrieve_tasks(LEAD)
    assert len(seen) == 3


@pytest.mark.parametrize(("response", "kind"), [
    (httpx.Response(500, json={"Status": "Error", "ExceptionType": "MXInvalidLeadException",
                               "ExceptionMessage": "Lead is locked"}), "MXInvalidLeadException"),
    (httpx.Response(400, json={"Status": "Error", "ExceptionType": "MXInvalidInputException",
                               "ExceptionMessage": "bad body"}), "MXInvalidInputException"),
    (httpx.Response(404, text="Not Found"), None),
    (httpx.Response(200, json={"Status": "Error", "ExceptionType": "MXDuplicateEntryException",
                               "ExceptionMessage": "odd"}), "MXDuplicateEntryException"),
    (httpx.Response(200, json={"RecordCount": 1, "TaskList": [{"Name": "no id"}]}), None),
])
def test_logical_errors_fail_at_once(response: httpx.Response, kind: str | None) -> None:
    client, seen, _ = make(answers(response))
    with pytest.raises(RejectedError) as err:
        client.retrieve_tasks(LEAD)
    assert len(seen) == 1
    assert err.value.exception_type == kind


def test_401_aborts_at_once() -> None:
    client, seen, _ = make(answers(httpx.Response(401, json={
        "Status": "Error", "ExceptionType": "MXUnAuthorizedAccessException",
        "ExceptionMessage": "Invalid key"})))
    with pytest.raises(AuthError, match="rejected the credentials or the host"):
        client.retrieve_tasks(LEAD)
    assert len(seen) == 1


def test_messages_never_echo_the_keys() -> None:
    echo = {"Status": "Error", "ExceptionType": "MXUnAuthorizedAccessException",
            "ExceptionMessage": f"key {ACCESS} / {SECRET} or u%24a1b2c3d4e5f6%24abc unknown"}
    client, _, _ = make(answers(httpx.Response(401, json=echo)), auth="query")
    with pytest.raises(AuthError) as err:
        client.retrieve_tasks(LEAD)
    text = str(err.value)
    assert ACCESS not in text and SECRET not in text and "a1b2c3d4e5f6" not in text
    assert "***" in text


def test_update_posts_json() -> None:
    client, seen, _ = make(answers(httpx.Response(200, json={
        "Status": "Success", "Message": {"AffectedRows": 1}})))
    body = {"UserTaskId": "t-1", "Name": "New"}
    assert client.update_task(body)["Status"] == "Success"
    assert seen[0].method == "POST" and seen[0].url.path == "/v2/Task.svc/Update"
    assert json.loads(seen[0].content) == body


def test_classify_recognises_the_limit_in_any_wording() -> None:
    with pytest.raises(ThrottledError) as err:
        classify(200, json.dumps({"Status": "Error", "ExceptionMessage":
                                  "API calls exceeded the limit of 72 in 60 second(s)"}).encode())
    assert (err.value.calls, err.value.period_s) == (72, 60.0)


def error_body(**fields: Any) -> bytes:
    return json.dumps({"Status": "Error", **fields}).encode()


@pytest.mark.parametrize(("status", "content", "kind", "message", "code"), [
    (500, error_body(ExceptionType="MXInvalidLeadException", ExceptionMessage="locked"),
     RejectedError, "MXInvalidLeadException: locked", 500),
    (500, b"Internal Server Error", TransientError, "HTTP 500 from the API", 500),
    (503, error_body(ExceptionType="Other", ExceptionMessage="busy"), TransientError,
     "HTTP 503 from the API", 503),
    (408, b"", TransientError, "HTTP 408 from the API", 408),
    (425, b"", TransientError, "HTTP 425 from the API", 425),
    (404, b"Not Found", RejectedError, "HTTP 404: HTTP 404", 404),
    (400, error_body(Message="no such field"), RejectedError, "HTTP 400: no such field", 400),
    (400, error_body(ExceptionMessage={"not": "text"}, ExceptionType="MXBad"), RejectedError,
     "HTTP 400: MXBad: ", 400),
    (200, b"{truncated", TransientError, "the API answered with a body that is not JSON", 200),
    (200, error_body(Message="plain error"), RejectedError, "plain error", 200),
    (200, json.dumps({"Status": " ERROR"}).encode(), None, None, None),
    (401, b"", AuthError, "the API rejected the credentials or the host (HTTP 401: HTTP 401); "
     "`lsq-sync doctor` checks both", 401),
    (429, b"", ThrottledError, "HTTP 429: rate limit exceeded", 429),
    (429, error_body(ExceptionType="MXSomethingElse", ExceptionMessage="no"), RejectedError,
     "HTTP 429: MXSomethingElse: no", 429),
    (403, error_body(ExceptionType="MXAPIRateLimitExceededException"), ThrottledError,
     "HTTP 403: rate limit exceeded", 403),
    (200, error_body(Message="API calls exceeded the limit of 20 in 5 second(s)"),
     ThrottledError, "API calls exceeded the limit of 20 in 5 second(s)", 200),
])
def test_classify_maps_every_answer(status: int, content: bytes, kind: type[Exception] | None,
                                    message: str | None, code: int | None) -> None:
    if kind is None:
        assert classify(status, content) == json.loads(content)
        return
    with pytest.raises(kind) as caught:
        classify(status, content)
    assert str(caught.value) == message
    assert getattr(caught.value, "status_code", None) == code


def test_classify_bounds_what_it_repeats_and_keeps_empty_answers() -> None:
    assert classify(200, b"") is None
    assert classify(200, b"[]") == []
    with pytest.raises(RejectedError) as caught:
        classify(500, error_body(ExceptionType="MX" + "k" * 300, ExceptionMessage="m" * 900))
    assert caught.value.exception_type == "MX" + "k" * 198
    assert str(caught.value) == f"MX{'k' * 198}: {'m' * 500}"
    with pytest.raises(RejectedError) as caught:
        classify(500, error_body(ExceptionType="MXBad", ExceptionMessage="key s3cr3t-key x"),
                 ["s3cr3t-key"])
    assert str(caught.value) == "MXBad: key *** x"


@pytest.mark.parametrize("at", [490, 495, 499, 500])
def test_a_secret_that_straddles_the_cut_is_redacted_before_it(at: int) -> None:
    secret = "u$3r-s3cr3t-key-0123456789"
    message = "x" * at + secret + " trailing"
    with pytest.raises(RejectedError) as caught:
        classify(500, error_body(ExceptionType="MXBad" + secret, ExceptionMessage=message),
                 [secret])
    shown = str(caught.value)
    assert not any(secret[:n] in shown for n in range(6, len(secret) + 1)), shown
    assert caught.value.exception_type == "MXBad***"
    assert shown.startswith("MXBad***: " + "x" * min(at, 500))


def test_retries_and_throttles_are_reported_with_what_happened() -> None:
    client, seen, fake = make(answers(httpx.Response(200, json=THROTTLE),
                                      httpx.ReadTimeout("slow"),
                                      httpx.ConnectError("refused"), ok()), timeout_s=7,
                              max_attempts=5)
    events: list[tuple[str, dict[str, Any]]] = []
    client._on_event = lambda event, **fields: events.append((event, fields))
    client.retrieve_tasks(LEAD)
    path = "/v2/LeadManagement.svc/RetrieveTaskByLeadId"
    # Each answer is a debug "request" event (by path, never the query, with the lead).
    requests = [f for e, f in events if e == "request"]
    assert [(r["status"], r["path"], r["lead_id"]) for r in requests] == [
        (200, path, LEAD), (200, path, LEAD)]  # the throttle answer, then the good one
    assert all(r["ms"] >= 0 and "?" not in r["path"] for r in requests)
    events = [(e, f) for e, f in events if e != "request"]
    assert [e for e, _ in events] == ["throttled", "retry", "retry"]
    assert events[0][1] == {"path": path, "status": 200, "stated_calls": 10,
                            "stated_period_s": 5.0, "new_limit": True}
    assert events[1][1]["path"] == path and events[1][1]["attempt"] == 1
    assert events[1][1]["lead_id"] == LEAD  # which lead, for the reader of the log
    assert events[1][1]["error"] == "no answer within 7s (ReadTimeout)"
    assert events[2][1]["attempt"] == 2
    assert events[2][1]["error"] == "connection failed (ConnectError: refused)"
    assert [f["delay_s"] for _, f in events[1:]] == [round(s, 3) for s in fake.slept[-2:]]
    assert (client.stats.calls, client.stats.throttled, client.stats.retries) == (4, 1, 2)
    assert [r.method for r in seen] == ["GET"] * 4


def test_an_answer_resets_the_count_of_unreachable_attempts() -> None:
    refused = httpx.ConnectError("refused")
    client, seen, _ = make(answers(refused, refused, ok(), refused, refused, ok()),
                           max_attempts=10)
    client.retrieve_tasks(LEAD)
    client.retrieve_tasks(LEAD)  # two more refusals in a row: still not "unreachable"
    assert len(seen) == 6 and client.stats.unreachable == 0
    dead, seen, _ = make(answers(refused), max_attempts=10)
    with pytest.raises(UnreachableError, match=r"cannot reach \[lsq\].base_url "
                                               r"\(api-in21.leadsquared.com: connection "
                                               r"failed \(ConnectError: refused\)\)"):
        dead.retrieve_tasks(LEAD)
    assert len(seen) == 3


def test_a_call_cap_allows_exactly_that_many_calls() -> None:
    from lsq_sync.control import Stats, Stop, StopReason
    from lsq_sync.errors import CapReached
    client, seen, _ = make(answers(ok()))
    stop = Stop()
    client.stats = Stats(cap=2, stop=stop)  # a run's: its cap, its stop
    client.retrieve_tasks(LEAD)
    client.retrieve_tasks(LEAD)
    assert not stop.is_set()
    with pytest.raises(CapReached):
        client.retrieve_tasks(LEAD)
    assert len(seen) == 2 and client.stats.calls == 2 and stop.reason == StopReason.CALL_CAP


def test_each_endpoint_sends_its_method_path_and_parameters() -> None:
    client, seen, _ = make(answers(httpx.Response(200, json={"Id": "u"})))
    client.user_by_access_key()
    client.update_task({"UserTaskId": "t"})
    assert [(r.method, r.url.path) for r in seen] == [
        ("GET", "/v2/Authentication.svc/UserByAccessKey.Get"), ("POST", "/v2/Task.svc/Update")]
    reader, _, _ = make(answers(ok()))
    assert reader.retrieve_tasks(LEAD)[0]["lead_id"] == LEAD
    assert reader.retrieve_task_list(LEAD).rows[0]["lead_id"] == LEAD


def test_each_slot_moves_to_when_its_request_really_leaves(sim: Any) -> None:
    """Over real HTTP, the slot taken before connecting is restamped as the headers go."""
    cfg = from_mapping({"lsq": {"base_url": sim.url, "access_key": sim.cfg.access_key,
                                "secret_key": sim.cfg.secret_key}}, env={})
    limiter = RateLimiter(100, 1.0)
    moved: list[float] = []
    real = limiter.sent
    limiter.sent = lambda slot: (moved.append(slot), real(slot))[1]  # type: ignore[method-assign]
    with LsqClient(cfg.lsq, limiter) as client:
        for lead in list(sim.state.lead_ids())[:3]:
            client.retrieve_tasks(lead)
    assert len(moved) == 3 and moved == sorted(moved)
    assert list(limiter.budget.windows[0].sends) != moved  # each one later than reserved


def test_log_events_of_a_call_name_its_lead_or_task() -> None:
    from lsq_sync.leadsquared.client import _about
    url = httpx.URL("http://h/v2/LeadManagement.svc/RetrieveTaskByLeadId?leadId=L-1")
    assert _about(url, None) == {"lead_id": "L-1"}
    assert _about(httpx.URL("http://h/v2/Task.svc/Update"), {"UserTaskId": "T-1"}) == {
        "task_id": "T-1"}
    assert _about(httpx.URL("http://h/v2/Authentication.svc/UserByAccessKey.Get"), None) == {}


def test_requests_say_who_sends_them_and_redirects_are_not_followed() -> None:
    from lsq_sync.version import __version__
    moved = httpx.Response(302, headers={"Location": "https://elsewhere.example/v2/x"})
    client, seen, _ = make(answers(moved, ok()))
    with pytest.raises(RejectedError, match="HTTP 302"):
        client.retrieve_tasks(LEAD)  # a redirect may carry the keys to another host
    assert len(seen) == 1 and seen[0].url.host == "api-in21.leadsquared.com"
    assert seen[0].headers["User-Agent"] == f"lsq-sync/{__version__}"
    assert seen[0].headers["Accept"] == "application/json"


def test_a_server_that_does_not_answer_times_out_at_timeout_s(
        make_sim: Callable[..., Any]) -> None:
    from lsq_sync.testing import Faults
    sim = make_sim(faults=Faults(slow=1.0, slow_s=3.0))
    cfg = from_mapping({"lsq": {"base_url": sim.url, "access_key": sim.cfg.access_key,
                                "secret_key": sim.cfg.secret_key, "timeout_s": 0.2,
                                "max_attempts": 1}}, env={})
    with LsqClient(cfg.lsq, RateLimiter(100, 1.0)) as client, \
            pytest.raises(TransientError, match=r"no answer within 0.2s \(ReadTimeout\)"):
        client.retrieve_tasks(next(iter(sim.state.lead_ids())))
