"""A LeadSquared-compatible API on loopback: deterministic data, the rate limit, faults."""

from __future__ import annotations

import bisect
import heapq
import itertools
import json
import logging
import random
import re
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

DEMO_ACCESS_KEY = "u$demo0a1b2c3d4e5f60718293a4b5c6d7e8f9"
DEMO_SECRET_KEY = "demo5ecret0a1b2c3d4e5f60718293a4b5c6d7e8"  # noqa: S105 - public demo key

DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{1,7})?$")  # as it answers

OWNERS = [
    ("190e7b6f-39da-11e6-b61b-22000aa8e760", "Asha Rao", "asha@example.com"),
    ("7cf19f34-21d6-11e6-8091-02b01d637af7", "Swesh Kumar", "swesh@example.com"),
    ("2b8f1c5e-4d0c-11ec-993a-06f221480cd8", "Maria Lopez", "maria@example.com"),
    ("1a50c565-8525-11ea-a93b-0aa4c559f4ca", "Chen Wei", "chen@example.com"),
    ("9d3e2a71-6b4f-11eb-8c2d-0a1b2c3d4e5f", "Olu Adeyemi", "olu@example.com"),
]
TASK_NAMES = ["Follow Up With New Lead", "Call back", "Send brochure", "Site visit",
              "Document Collection", "Demo meeting", "Payment reminder"]
STATUSES = ["Pending", "Pending", "Pending", "Completed", "Cancelled"]
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
EVENT_CREATE, EVENT_COMPLETE, EVENT_UPDATE = 7, 16, 17  # LeadSquared's task webhook events


@dataclass
class Faults:
    """What goes wrong, and how often (shares are per request, 0..1)."""

    latency_ms: tuple[float, float] = (0.0, 0.0)
    bare_500: float = 0.0          # 500 with no MX body: transient
    malformed: float = 0.0         # 200 with a truncated JSON body
    html_502: float = 0.0          # a proxy's HTML error page
    drop: float = 0.0              # connection closed mid-body
    slow: float = 0.0              # answer after `slow_s` (beyond the client's timeout)
    slow_s: float = 2.0
    mx_error_every: int = 0        # lead index % N == 1 always answers a 500 MX error
    bad_record_every: int = 0      # lead index % N == 2 has a task with a wrongly typed field
    echo_request: bool = False     # error messages quote the request: its URL and keys


@dataclass
class SimConfig:
    leads: int = 300
    seed: int = 1
    max_tasks: int = 6
    access_key: str = DEMO_ACCESS_KEY
    secret_key: str = DEMO_SECRET_KEY
    rate_calls: int = 25             # 0: no limit
    rate_period_s: float = 5.0
    throttle_status: int = 429       # 429, 200 or 403, as seen in the wild
    account_host: str | None = None  # what UserByAccessKey.Get names as the API host
    # What Task.svc/Update does with a field its body omits; the real API does not say,
    # so a client must be right under both: "keep" it or "clear" it.
    update_omitted: str = "keep"
    faults: Faults = field(default_factory=Faults)
    # --churn: each lead's tasks change by themselves, at its own rate (changes per lead per
    # hour, spread over two decades around this); 0: only what a test or Update changes.
    churn: float = 0.0
    webhooks: WebhookConfig | None = None


@dataclass
class WebhookConfig:
    """LeadSquared-like webhooks: an event posted for every task change, lossy on purpose."""

    url: str
    header: tuple[str, str] | None = None   # the custom header (name, value)
    loss: float = 0.0                        # share never posted
    dup: float = 0.0                         # share posted twice
    delay_s: tuple[float, float] = (0.0, 0.0)
    encoding: str = "json"                   # json | form | text


class SimState:
    """The simulated account: generated leads, plus every change made since."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.lock = threading.RLock()
        self._overrides: dict[str, list[dict[str, Any]]] = {}
        self._where: dict[str, str] = {}          # task id -> lead id, once materialised
        self._graveyard: dict[str, tuple[str, dict[str, Any]]] = {}
        self.update_calls: dict[str, int] = {}
        # Every change, for tests and benchmarks: lead id -> when it last changed
        # (time.time()), and a callback (event, lead id, task id) the webhooks hang on.
        self.changed_at: dict[str, float] = {}
        self.on_change: Callable[[int | None, str, str], None] | None = None

    def _changed(self, event: int | None, lead_id: str, task_id: str) -> None:
        """Called under the lock after each change (event None: no webhook, a deletion)."""
        self.changed_at[lead_id] = time.time()
        if self.on_change is not None:
            self.on_change(event, lead_id, task_id)

    # -- ids ---------------------------------------------------------------------------

    def lead_id(self, index: int) -> str:
        return f"{index:08x}-5151-4000-8000-{self.cfg.seed:012x}"

    def lead_index(self, lead_id: str) -> int | None:
        parts = lead_id.lower().split("-")
        if len(parts) != 5 or parts[1:4] != ["5151", "4000", "8000"]:
            return None
        try:
            index, seed = int(parts[0], 16), int(parts[4], 16)
        except ValueError:
            return None
        if seed != self.cfg.seed or not 0 <= index < self.cfg.leads:
            return None
        return index

    def lead_ids(self) -> Iterator[str]:
        return (self.lead_id(i) for i in range(self.cfg.leads))

    def task_id(self, lead_index: int, n: int) -> str:
        return f"{lead_index:08x}-{n:04x}-4000-9000-{self.cfg.seed:012x}"

    # -- generated data ----------------------------------------------------------------

    def _generate(self, index: int) -> list[dict[str, Any]]:
        rng = random.Random(self.cfg.seed * 1_000_003 + index)
        count = rng.randint(0, self.cfg.max_tasks)
        tasks: list[dict[str, Any]] = []
        for n in range(count):
            owner = OWNERS[rng.randrange(len(OWNERS))]
            creator = OWNERS[rng.randrange(len(OWNERS))]
            created = EPOCH + timedelta(minutes=rng.randrange(0, 300 * 24 * 60))
            due = created + timedelta(minutes=rng.randrange(30, 60 * 24 * 60))
            frac = ".000" if n % 2 else ""
            task: dict[str, Any] = {
                "TaskID": self.task_id(index, n),
                "Name": rng.choice(TASK_NAMES),
                "Description": f"Generated task {n} of lead {index}",
                "DueDate": due.strftime("%Y-%m-%d %H:%M:%S") + frac,
                "CreatedOn": created.strftime("%Y-%m-%d %H:%M:%S") + frac,
                "OwnerID": owner[0],
                "OwnerName": owner[1],
                "CreatedBy": creator[0],
                "CreatedByName": creator[1],
                "Status": rng.choice(STATUSES),
                "Reminder": str(rng.choice([0, 5, 15, 20, 30, 60])),
            }
            tasks.append(task)
        every = self.cfg.faults.bad_record_every
        if every and index % every == 2 % every and tasks:
            tasks[-1]["Reminder"] = {"minutes": "soon"}
        return tasks

    def tasks_of(self, lead_id: str) -> list[dict[str, Any]]:
        """The lead's current tasks, as the API would list them (copies)."""
        with self.lock:
            if lead_id in self._overrides:
                return [dict(t) for t in self._overrides[lead_id]]
        index = self.lead_index(lead_id)
        return [] if index is None else self._generate(index)

    def _materialise(self, lead_id: str) -> list[dict[str, Any]]:
        if lead_id not in self._overrides:
            self._overrides[lead_id] = self.tasks_of(lead_id)
            for task in self._overrides[lead_id]:
                self._where[task["TaskID"]] = lead_id
        return self._overrides[lead_id]

    def _locate(self, task_id: str) -> tuple[str, dict[str, Any]] | None:
        lead_id = self._where.get(task_id)
        if lead_id is None:
            parts = task_id.split("-")
            if len(parts) != 5:
                return None
            try:
                lead_id = self.lead_id(int(parts[0], 16))
            except ValueError:
                return None
        for task in self._materialise(lead_id):
            if task["TaskID"] == task_id:
                return lead_id, task
        return None

    def all_tasks(self) -> dict[str, dict[str, Any]]:
        """Every live task of every lead, by id, with its lead (for comparisons)."""
        result = {}
        for lead_id in self.lead_ids():
            for task in self.tasks_of(lead_id):
                result[task["TaskID"]] = {**task, "_lead": lead_id}
        with self.lock:
            for lead_id in self._overrides:
                if self.lead_index(lead_id) is None:
                    for task in self._overrides[lead_id]:
                        result[task["TaskID"]] = {**task, "_lead": lead_id}
        return result

    # -- changes -----------------------------------------------------------------------

    def task(self, task_id: str) -> dict[str, Any] | None:
        with self.lock:
            found = self._locate(task_id)
            return dict(found[1]) if found else None

    def _existing(self, task_id: str) -> tuple[str, dict[str, Any]]:
        """The task's lead and the task itself (the live copy); KeyError if it is gone."""
        found = self._locate(task_id)
        if found is None:
            raise KeyError(task_id)
        return found

    def delete_task(self, task_id: str) -> None:
        with self.lock:
            lead_id, task = self._existing(task_id)
            self._overrides[lead_id].remove(task)
            self._graveyard[task_id] = (lead_id, task)
            self._where.pop(task_id, None)
            self._changed(None, lead_id, task_id)  # LeadSquared has no task-delete event

    def restore_task(self, task_id: str) -> None:
        with self.lock:
            lead_id, task = self._graveyard.pop(task_id)
            self._materialise(lead_id).append(task)
            self._where[task_id] = lead_id
            self._changed(EVENT_CREATE, lead_id, task_id)

    def move_task(self, task_id: str, to_lead: str) -> None:
        with self.lock:
            lead_id, task = self._existing(task_id)
            self._overrides[lead_id].remove(task)
            self._materialise(to_lead).append(task)
            self._where[task_id] = to_lead
            self.changed_at[lead_id] = time.time()
            self._changed(EVENT_UPDATE, to_lead, task_id)

    def change_task(self, task_id: str, **fields: Any) -> None:
        with self.lock:
            lead_id, task = self._existing(task_id)
            task.update(fields)
            completed = fields.get("Status") == "Completed"
            self._changed(EVENT_COMPLETE if completed else EVENT_UPDATE, lead_id, task_id)

    def add_task(self, lead_id: str, task: dict[str, Any]) -> None:
        with self.lock:
            self._materialise(lead_id).append(dict(task))
            self._where[task["TaskID"]] = lead_id
            self._changed(EVENT_CREATE, lead_id, task["TaskID"])

    def apply_update(self, body: Any) -> tuple[int, dict[str, Any]]:
        """Task.svc/Update: validate like the API, then apply. Returns (status, body)."""
        if not isinstance(body, dict):
            return 400, _error("MXInvalidInputException", "The request body is not a JSON object")
        task_id = body.get("UserTaskId")
        if not isinstance(task_id, str) or not task_id:
            return 500, _error("MXInvalidInputException", "UserTaskId is required")
        due = body.get("DueDate")
        if due is not None and (not isinstance(due, str) or not DATE_RE.match(due)):
            return 500, _error("MXInvalidDateTimeFormatException",
                               f"DueDate '{due}' is not in the format yyyy-MM-dd HH:mm:ss")
        reminder = body.get("Reminder")
        if reminder is not None and (isinstance(reminder, bool)
                                     or not isinstance(reminder, int) or reminder < 0):
            return 500, _error("MXInvalidInputException", "Reminder must be minutes (>= 0)")
        if str(body.get("NotifyBy", "1000")) not in ("1100", "1000"):
            return 500, _error("MXInvalidInputException", "NotifyBy must be 1100 or 1000")
        owner = None
        if body.get("OwnerId"):
            owner = next((o for o in OWNERS if o[0] == body["OwnerId"]), None)
            if owner is None:
                return 500, _error("MXInvalidUserException", "The owner does not exist")
        elif body.get("OwnerEmailAddress"):
            owner = next((o for o in OWNERS if o[2] == body["OwnerEmailAddress"]), None)
            if owner is None:
                return 500, _error("MXInvalidUserException",
                                   "No user with that email address exists")
        with self.lock:
            found = self._locate(task_id)
            if found is None:
                return 500, _error("MXInvalidEntityException", "The task does not exist")
            lead_id, task = found
            related = body.get("RelatedEntityId")
            if str(body.get("RelatedEntity", 0)) == "1" and related and related != lead_id:
                self.move_task(task_id, related)
            clear = self.cfg.update_omitted == "clear"
            for api in ("Name", "Description", "DueDate"):
                if body.get(api) is not None:
                    task[api] = body[api]
                elif clear:
                    task[api] = None
            if reminder is not None:
                task["Reminder"] = str(reminder)
            elif clear:
                task["Reminder"] = None
            if owner is not None:
                task["OwnerID"], task["OwnerName"] = owner[0], owner[1]
            elif clear:
                task["OwnerID"] = task["OwnerName"] = None
            self.update_calls[task_id] = self.update_calls.get(task_id, 0) + 1
            auto_id = sum(self.update_calls.values())
            self._changed(EVENT_UPDATE, self._where.get(task_id, lead_id), task_id)
        return 200, {"Status": "Success", "Message": {"AffectedRows": 1, "AutoId": auto_id}}


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"Status": "Error", "ExceptionType": kind, "ExceptionMessage": message}


class Meter:
    """The server side of the rate limit: a sliding window over arrivals, and statistics.

    With `enforce` off it refuses nothing and only measures: the busiest window then shows
    what a client sent, not what a limit let through.
    """

    def __init__(self, calls: int, period: float, *, enforce: bool = True) -> None:
        self.calls = calls
        self.period = period
        self.enforce = enforce
        self.lock = threading.Lock()
        self.arrivals: deque[float] = deque()
        self.accepted = 0
        self.throttled = 0
        self.busiest = 0
        self.first: float | None = None
        self.last: float | None = None
        # Gap between each accepted call and the one `calls` before it: a client that
        # uses the whole limit makes every gap exactly one period.
        self.recent: deque[float] = deque(maxlen=max(calls, 1))
        self.gap_sum = 0.0
        self.gaps = 0
        self.by_path: dict[str, int] = {}
        self.received = 0  # every API request, whatever its answer (401s included)
        # Each rate-limited arrival and whether it was let through (the latest 100,000).
        self.log: deque[tuple[float, bool]] = deque(maxlen=100_000)

    def arrived(self) -> None:
        with self.lock:
            self.received += 1

    def admit(self, path: str) -> bool:
        now = time.monotonic()
        with self.lock:
            self.by_path[path] = self.by_path.get(path, 0) + 1
            arrivals = self.arrivals
            while arrivals and arrivals[0] <= now - self.period:
                arrivals.popleft()
            if self.enforce and self.calls and len(arrivals) >= self.calls:
                self.throttled += 1
                self.log.append((now, False))
                return False
            self.log.append((now, True))
            arrivals.append(now)
            if self.calls and len(self.recent) == self.calls:
                self.gap_sum += now - self.recent[0]
                self.gaps += 1
            self.recent.append(now)
            self.accepted += 1
            self.busiest = max(self.busiest, len(arrivals))
            self.first = now if self.first is None else self.first
            self.last = now
            return True

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            span = (self.last - self.first) if self.first is not None and self.last else 0.0
            return {"received": self.received, "accepted": self.accepted,
                    "throttled": self.throttled,
                    "busiest_window": self.busiest, "limit": self.calls,
                    "period_s": self.period, "span_s": span, "by_path": dict(self.by_path),
                    "mean_gap_s": self.gap_sum / self.gaps if self.gaps else None}


class Churn:
    """Changes the account's tasks by themselves: lead i changes as a Poisson process with
    its own rate, `churn` * 10**u (u uniform in [-1, 1], fixed per lead by the seed), so
    the rates spread over two decades around `churn` changes per lead per hour."""

    def __init__(self, state: SimState, churn: float, seed: int) -> None:
        self.state = state
        rng = random.Random(seed * 7919 + 17)
        self.rates = [churn * 10 ** rng.uniform(-1, 1) / 3600 for _ in range(state.cfg.leads)]
        self._cumulative = list(itertools.accumulate(self.rates))
        self._rng = random.Random(seed * 104_729 + 3)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lsq-sim-churn", daemon=True)
        self.changes = 0

    def rate_of(self, lead_id: str) -> float:
        """The lead's true change rate, per second (what a benchmark's oracle knows)."""
        index = self.state.lead_index(lead_id)
        return 0.0 if index is None else self.rates[index]

    def start(self) -> Churn:
        if self._cumulative and self._cumulative[-1] > 0:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        total = self._cumulative[-1]
        while not self._stop.wait(self._rng.expovariate(total)):
            index = bisect.bisect_right(self._cumulative, self._rng.random() * total)
            self.change(self.state.lead_id(min(index, len(self.rates) - 1)))

    def change(self, lead_id: str) -> None:
        """One change of the lead: a task updated (most often), completed, or created."""
        state, rng = self.state, self._rng
        with state.lock:
            tasks = state.tasks_of(lead_id)
            roll = rng.random()
            self.changes += 1
            if not tasks or roll < 0.1:
                index = state.lead_index(lead_id) or 0
                task_id = f"{index:08x}-cccc-4000-9000-{self.changes:012x}"
                owner = OWNERS[rng.randrange(len(OWNERS))]
                state.add_task(lead_id, {
                    "TaskID": task_id, "Name": rng.choice(TASK_NAMES),
                    "Description": f"Created by churn #{self.changes}",
                    "DueDate": "2026-12-31 10:00:00", "CreatedOn": "2026-12-01 10:00:00",
                    "OwnerID": owner[0], "OwnerName": owner[1], "CreatedBy": owner[0],
                    "CreatedByName": owner[1], "Status": "Pending", "Reminder": "15"})
                return
            task = tasks[rng.randrange(len(tasks))]
            if roll < 0.2:
                state.change_task(task["TaskID"], Status="Completed")
            else:
                state.change_task(task["TaskID"], Description=f"Changed by churn #{self.changes}")


class WebhookPoster:
    """Posts a LeadSquared-like webhook for each change, after its delay, in a thread:
    some lost, some twice, as the real ones may be."""

    def __init__(self, cfg: WebhookConfig, seed: int) -> None:
        self.cfg = cfg
        self._rng = random.Random(seed * 31 + 5)
        self._heap: list[tuple[float, int, bytes]] = []
        self._cond = threading.Condition()
        self._seq = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="lsq-sim-webhooks", daemon=True)
        self.stats = {"changes": 0, "lost": 0, "posted": 0, "duplicated": 0, "failed": 0}

    def start(self) -> WebhookPoster:
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout=5)

    def changed(self, event: int | None, lead_id: str, task_id: str) -> None:
        if event is None:
            return
        cfg, rng = self.cfg, self._rng
        with self._cond:
            self.stats["changes"] += 1
            if rng.random() < cfg.loss:
                self.stats["lost"] += 1
                return
            copies = 2 if rng.random() < cfg.dup else 1
            self.stats["duplicated"] += copies - 1
            body = self._body(event, lead_id, task_id)
            for _ in range(copies):
                due = time.monotonic() + rng.uniform(*cfg.delay_s)
                self._seq += 1
                heapq.heappush(self._heap, (due, self._seq, body))
            self._cond.notify_all()

    def _body(self, event: int, lead_id: str, task_id: str) -> bytes:
        fields = {"RelatedEntityId": lead_id, "UserTaskId": task_id, "EventType": str(event),
                  "ModifiedOn": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")}
        if self.cfg.encoding == "form":
            return urlencode(fields).encode()
        return json.dumps(fields).encode()

    def _loop(self) -> None:
        ctype = {"json": "application/json", "form": "application/x-www-form-urlencoded",
                 "text": "text/plain"}[self.cfg.encoding]
        headers = {"content-type": ctype}
        if self.cfg.header is not None:
            headers[self.cfg.header[0]] = self.cfg.header[1]
        with httpx.Client(timeout=10) as http:
            while True:
                with self._cond:
                    while not self._stopping and (
                            not self._heap or self._heap[0][0] > time.monotonic()):
                        wait = self._heap[0][0] - time.monotonic() if self._heap else None
                        self._cond.wait(wait)
                    if self._stopping:
                        return
                    _due, _seq, body = heapq.heappop(self._heap)
                try:
                    answer = http.post(self.cfg.url, content=body, headers=headers)
                    ok = answer.status_code == 200
                except httpx.HTTPError:
                    ok = False
                with self._cond:
                    self.stats["posted" if ok else "failed"] += 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes
    echo = ""  # with Faults.echo_request: the request, as error messages quote it
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, body: Any) -> None:
        echo = self.echo
        if echo and isinstance(body, dict) and "ExceptionMessage" in body:
            # Some gateways quote what they were sent: a client must not repeat it.
            body = {**body, "ExceptionMessage": f"{body['ExceptionMessage']} ({echo})"}
        self._send(status, json.dumps(body).encode())

    def _dispatch(self, method: str) -> None:
        sim = self.server.sim
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        payload = self.rfile.read(length) if length else b""
        path = parts.path
        if path == "/_sim/stats":
            self._json(200, sim.meter.snapshot())
            return
        sim.meter.arrived()
        faults = sim.cfg.faults
        access = self.headers.get("x-LSQ-AccessKey") or query.get("accessKey")
        secret = self.headers.get("x-LSQ-SecretKey") or query.get("secretKey")
        sim.seen_access_keys.add(access or "")
        if faults.echo_request:
            self.echo = f"request {method} {self.path}, access key {access}, secret key {secret}"
        if access != sim.cfg.access_key or secret != sim.cfg.secret_key:
            self._json(401, _error("MXUnAuthorizedAccessException",
                                   "Invalid access key or secret key"))
            return
        routes = {
            ("GET", "/v2/LeadManagement.svc/RetrieveTaskByLeadId"): sim.retrieve,
            ("POST", "/v2/Task.svc/Update"): sim.update,
            ("GET", "/v2/Authentication.svc/UserByAccessKey.Get"): sim.whoami,
        }
        route = routes.get((method, path))
        if route is None:
            self._json(404, _error("MXNotFoundException", f"No API at {method} {path}"))
            return
        if not sim.meter.admit(path):
            cfg = sim.cfg
            self._json(cfg.throttle_status, _error(
                "MXAPIRateLimitExceededException",
                f"API calls exceeded the limit of {cfg.rate_calls} in "
                f"{cfg.rate_period_s:g} second(s)"))
            return
        # The limit counts arrivals; the latency is the server's work after that.
        low, high = faults.latency_ms
        if high > 0:
            time.sleep(sim.rng_uniform(low, high) / 1000)
        fault = sim.pick_fault()
        if fault == "bare_500":
            self._send(500, b"Internal Server Error", "text/plain")
            return
        if fault == "html_502":
            self._send(502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html")
            return
        if fault == "slow":
            time.sleep(faults.slow_s)
        status, body = route(query, payload)
        raw = json.dumps(body).encode()
        if fault == "malformed":
            self._send(200, raw[: max(1, len(raw) // 2)])
            return
        if fault == "drop":
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw[: len(raw) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._send(status, raw)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    sim: Simulator

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (its timeout, a fault we served) is not worth a traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError | TimeoutError):
            return
        logging.getLogger("lsq_sync.simulator").warning("request failed: %r", error)


class Simulator:
    """Serve the simulated API on 127.0.0.1 in a background thread."""

    def __init__(self, cfg: SimConfig | None = None, *, port: int = 0,
                 host: str = "127.0.0.1") -> None:
        self.cfg = cfg or SimConfig()
        self.state = SimState(self.cfg)
        self.meter = Meter(self.cfg.rate_calls, self.cfg.rate_period_s)
        self.seen_access_keys: set[str] = set()
        self._rng = random.Random(self.cfg.seed)
        self._rng_lock = threading.Lock()
        self._server = _Server((host, port), _Handler)
        self._server.sim = self
        self._thread: threading.Thread | None = None
        self.churn = Churn(self.state, self.cfg.churn, self.cfg.seed)
        self.webhooks: WebhookPoster | None = None
        if self.cfg.webhooks is not None:
            self.webhooks = WebhookPoster(self.cfg.webhooks, self.cfg.seed)
            self.state.on_change = self.webhooks.changed

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def lsq_settings(self, **more: Any) -> dict[str, Any]:
        """An [lsq] section that reaches this simulator with its keys, plus `more`."""
        return {"base_url": self.url, "access_key": self.cfg.access_key,
                "secret_key": self.cfg.secret_key, **more}

    def start(self) -> Simulator:
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name="lsq-simulator", daemon=True)
        self._thread.start()
        self._start_changes()
        return self

    def send_webhooks(self, cfg: WebhookConfig) -> WebhookPoster:
        """From now on, post a webhook for every task change (for a listener started after
        the simulator: its URL is known only then)."""
        if self.webhooks is not None:
            self.webhooks.stop()
        self.webhooks = WebhookPoster(cfg, self.cfg.seed).start()
        self.state.on_change = self.webhooks.changed
        return self.webhooks

    def _start_changes(self) -> None:
        if self.webhooks is not None:
            self.webhooks.start()
        self.churn.start()

    def serve_forever(self) -> None:
        self._start_changes()
        self._server.serve_forever(poll_interval=0.2)

    def stop(self) -> None:
        self.churn.stop()
        if self.webhooks is not None:
            self.webhooks.stop()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- request handling ----------------------------------------------------------------

    def rng_uniform(self, low: float, high: float) -> float:
        with self._rng_lock:
            return self._rng.uniform(low, high)

    def pick_fault(self) -> str | None:
        f = self.cfg.faults
        with self._rng_lock:
            roll = self._rng.random()
        for name in ("bare_500", "malformed", "html_502", "drop", "slow"):
            share = float(getattr(f, name))
            if roll < share:
                return name
            roll -= share
        return None

    def retrieve(self, query: dict[str, str], _payload: bytes) -> tuple[int, Any]:
        lead_id = query.get("leadId", "")
        index = self.state.lead_index(lead_id)
        every = self.cfg.faults.mx_error_every
        if index is not None and every and index % every == 1 % every:
            return 500, _error("MXInvalidLeadException",
                               f"Lead {lead_id} cannot be read: data is locked for migration")
        tasks = self.state.tasks_of(lead_id)
        body: dict[str, Any] = {"RecordCount": len(tasks)}
        # An empty lead comes both ways in the wild: with an empty TaskList and without.
        if tasks or (index or 0) % 2:
            body["TaskList"] = tasks
        return 200, body

    def update(self, _query: dict[str, str], payload: bytes) -> tuple[int, Any]:
        try:
            body = json.loads(payload or b"null")
        except ValueError:
            return 400, _error("MXInvalidInputException", "The request body is not JSON")
        return self.state.apply_update(body)

    def whoami(self, _query: dict[str, str], _payload: bytes) -> tuple[int, Any]:
        host = self.cfg.account_host or self.url
        return 200, {
            "Id": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
            "FirstName": "Demo", "LastName": "Admin",
            "EmailAddress": "admin@example.com", "Role": "Administrator",
            "TimeZone": "Asia/Kolkata",
            "LSQCommonServiceURLs": {"api": host, "app": host},
        }
