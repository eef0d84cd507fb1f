"""The LeadSquared API client: auth, timeouts, error classes, retries and pacing."""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from lsq_sync.config import LsqConfig
from lsq_sync.control import Stats
from lsq_sync.errors import (
    AuthError,
    CapReached,
    RejectedError,
    StillThrottled,
    ThrottledError,
    TransientError,
    UnreachableError,
)
from lsq_sync.leadsquared.ratelimit import RateLimiter
from lsq_sync.leadsquared.tasks import TaskList, parse_task_list, parse_tasks
from lsq_sync.redact import redact, secret_forms
from lsq_sync.version import __version__

RETRIEVE_TASKS = "/v2/LeadManagement.svc/RetrieveTaskByLeadId"
UPDATE_TASK = "/v2/Task.svc/Update"
USER_BY_ACCESS_KEY = "/v2/Authentication.svc/UserByAccessKey.Get"

_LIMIT_RE = re.compile(r"limit of\s+(\d+)\s+in\s+(\d+(?:\.\d+)?)\s*second", re.IGNORECASE)
MAX_BACKOFF_S = 60.0
# Connections in a row that fail before any answer (refused, DNS, TLS, connect timeout),
# across every thread: then the host is wrong or down, and the run stops within seconds
# instead of failing every lead through its retries.
UNREACHABLE_AFTER = 3



def throttle_limit(message: str) -> tuple[int | None, float | None]:
    match = _LIMIT_RE.search(message)
    if not match:
        return None, None
    return int(match.group(1)), float(match.group(2))


def classify(status: int, content: bytes, forms: Iterable[str] = ()) -> Any:
    """The parsed body of a usable answer, or the ApiError this answer amounts to."""
    try:
        body: Any = json.loads(content) if content else None
        parsed = True
    except (ValueError, UnicodeDecodeError):
        body, parsed = None, False
    kind = message = ""
    if isinstance(body, dict):
        # Redact, then cut: a secret that straddles the cut would leave its prefix behind.
        kind = redact(str(body.get("ExceptionType") or ""), forms)[:200]
        raw_message = body.get("ExceptionMessage") or body.get("Message") or ""
        message = redact(raw_message, forms)[:500] if isinstance(raw_message, str) else ""
    throttle = "RateLimit" in kind or _LIMIT_RE.search(message) is not None
    if throttle or (status == 429 and not kind):
        calls, period = throttle_limit(message)
        raise ThrottledError(message or f"HTTP {status}: rate limit exceeded",
                             calls=calls, period_s=period, status_code=status)
    described = f"{kind}: {message}" if kind else (message or f"HTTP {status}")
    if status == 401:
        raise AuthError(f"the API rejected the credentials or the host (HTTP 401: "
                        f"{described}); `lsq-sync doctor` checks both",
                        exception_type=kind or None, status_code=401)
    if status >= 500:
        if kind.startswith("MX"):
            raise RejectedError(described, exception_type=kind, status_code=status)
        raise TransientError(f"HTTP {status} from the API", status_code=status)
    if status in (408, 425):
        raise TransientError(f"HTTP {status} from the API", status_code=status)
    if status != 200:
        raise RejectedError(f"HTTP {status}: {described}", exception_type=kind or None,
                            status_code=status)
    if not parsed:
        raise TransientError("the API answered with a body that is not JSON",
                             status_code=status)
    if isinstance(body, dict) and str(body.get("Status", "")).lower() == "error":
        raise RejectedError(described, exception_type=kind or None, status_code=status)
    return body


def _about(url: httpx.URL, json_body: Any) -> dict[str, str]:
    """Which lead or task a call is about, for its log events."""
    lead = url.params.get("leadId")
    if lead:
        return {"lead_id": lead}
    task = json_body.get("UserTaskId") if isinstance(json_body, dict) else None
    return {"task_id": str(task)} if task else {}


def _can_heal(exc: BaseException) -> bool:
    return (isinstance(exc, TransientError | httpx.TransportError)
            and not isinstance(exc, StillThrottled))


def _failure(state: RetryCallState) -> BaseException:
    assert state.outcome is not None
    exc = state.outcome.exception()
    assert exc is not None
    return exc


class LsqClient:
    """Thread-safe: one instance serves every worker of a run."""

    def __init__(self, cfg: LsqConfig, limiter: RateLimiter, *,
                 transport: httpx.BaseTransport | None = None,
                 on_event: Callable[..., None] | None = None,
                 stats: Stats | None = None) -> None:
        cfg.require_credentials()
        self.cfg = cfg
        self.limiter = limiter
        self.stats = stats or Stats()  # a run's, with its call cap
        self._forms = secret_forms([cfg.access_key.reveal(), cfg.secret_key.reveal()])
        self._on_event = on_event or (lambda *a, **k: None)
        headers = {"User-Agent": f"lsq-sync/{__version__}", "Accept": "application/json"}
        self._params: dict[str, str] = {}
        if cfg.auth == "header":
            headers["x-LSQ-AccessKey"] = cfg.access_key.reveal()
            headers["x-LSQ-SecretKey"] = cfg.secret_key.reveal()
        else:
            # httpx percent-encodes params, so the `$` in access keys arrives intact.
            self._params = {"accessKey": cfg.access_key.reveal(),
                            "secretKey": cfg.secret_key.reveal()}
        self._client_args: dict[str, Any] = {
            "headers": headers,
            "timeout": httpx.Timeout(cfg.timeout_s),
            # One connection per thread: a shared pool serialises every request on its
            # lock and polls each idle connection per request, which costs more CPU than
            # the request itself at thousands of calls per second.
            "limits": httpx.Limits(max_connections=1, max_keepalive_connections=1),
            "transport": transport,
            "follow_redirects": False,
        }
        # One policy for every call (tenacity keeps each thread's state apart); the
        # backoff sleeps are the limiter's, which end at once when the run stops.
        self._retrying = Retrying(
            retry=retry_if_exception(_can_heal), stop=stop_after_attempt(cfg.max_attempts),
            wait=lambda state: self.backoff(state.attempt_number),
            sleep=lambda seconds: self.limiter.wait(seconds),
            before_sleep=self._retried, retry_error_callback=self._give_up)
        self._local = threading.local()
        self._clients: list[httpx.Client] = []
        self._clients_lock = threading.Lock()

    @property
    def _http(self) -> httpx.Client:
        http: httpx.Client | None = getattr(self._local, "http", None)
        if http is None:
            with self._clients_lock:
                if "verify" not in self._client_args:
                    # One TLS context for every thread's client, made when the first is:
                    # each httpx.Client would otherwise load the CA bundle itself (tens of
                    # ms of CPU each, under the GIL), which spread a window's first
                    # requests over half a second as the workers started.
                    self._client_args["verify"] = httpx.create_ssl_context()
                http = httpx.Client(**self._client_args)
                self._clients.append(http)
            self._local.http = http
        return http

    def close(self) -> None:
        with self._clients_lock:
            clients, self._clients = self._clients, []
        for http in clients:
            http.close()
        self.limiter.close()

    def __enter__(self) -> LsqClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def redact(self, text: str) -> str:
        return redact(text, self._forms)

    # -- endpoints -----------------------------------------------------------------------

    def retrieve_tasks(self, lead_id: str) -> list[dict[str, Any]]:
        """A lead's tasks; BadRecord if any of them is malformed."""
        return parse_task_list(self._retrieve(lead_id), lead_id)

    def retrieve_task_list(self, lead_id: str, *, slot: float | None = None) -> TaskList:
        """A lead's tasks, with the malformed ones set apart (see tasks.parse_tasks), and
        when the request that answered was sent (what orders two reads of one lead)."""
        sent: list[datetime] = []
        found = parse_tasks(self._retrieve(lead_id, slot, sent), lead_id)
        found.sent_at = sent[-1] if sent else None
        return found

    def _retrieve(self, lead_id: str, slot: float | None = None,
                  sent: list[datetime] | None = None) -> Any:
        return self.request("GET", RETRIEVE_TASKS, params={"leadId": lead_id}, slot=slot,
                            sent=sent)

    def update_task(self, payload: dict[str, Any], *, slot: float | None = None) -> Any:
        return self.request("POST", UPDATE_TASK, json_body=payload, slot=slot)

    # -- slots taken ahead, for a write that must follow its read at once --------------------

    def reserve_pair(self) -> tuple[float, float | None]:
        """Two slots at once (see RateLimiter.acquire_pair): pass them to a read and the
        write that relies on it; give back with release() what is not used."""
        return self.limiter.acquire_pair()

    def try_reserve(self) -> float | None:
        """A slot if one is free right now, else None."""
        return self.limiter.try_acquire()

    def release(self, slot: float) -> None:
        self.limiter.release(slot)

    def user_by_access_key(self) -> Any:
        return self.request("GET", USER_BY_ACCESS_KEY)

    # -- the request loop ----------------------------------------------------------------

    def request(self, method: str, path: str, *, params: dict[str, str] | None = None,
                json_body: Any = None, slot: float | None = None,
                sent: list[datetime] | None = None) -> Any:
        """One logical call: waits for a slot (its first attempt takes `slot` if given, one
        reserved already), waits out throttles, and retries what can heal (5xx, timeouts,
        dropped connections) with backoff; the backoff sleeps end at the run's stop. Each
        attempt's send time (UTC) is appended to `sent`."""
        query = {**(params or {}), **self._params}
        # One absolute URL, built once: httpx would otherwise parse it three times.
        url = httpx.URL(f"{self.cfg.base_url}{path}?{urlencode(query)}" if query
                        else f"{self.cfg.base_url}{path}")
        http = self._http  # created before the slot is taken: building one is slow
        throttles = [0]    # across the attempts: a throttle is a wait, not an attempt
        held = [] if slot is None else [slot]
        try:
            return self._retrying(self._attempt, http, method, url, path, json_body,
                                  throttles, held, [] if sent is None else sent)
        finally:
            for unused in held:  # the call never went (the cap, a stop)
                self.limiter.release(unused)

    def _retried(self, state: RetryCallState) -> None:
        error = self._as_transient(_failure(state))
        self.stats.add(retries=1)
        self._on_event("retry", path=state.args[3], attempt=state.attempt_number,
                       error=str(error), delay_s=round(state.upcoming_sleep, 3),
                       **_about(state.args[2], state.args[4]))

    def _give_up(self, state: RetryCallState) -> Any:
        error = self._as_transient(_failure(state))
        raise TransientError(f"{error} (gave up after {state.attempt_number} attempts)",
                             status_code=error.status_code) from None

    def _attempt(self, http: httpx.Client, method: str, url: httpx.URL, path: str,
                 json_body: Any, throttles: list[int], held: list[float],
                 sent: list[datetime]) -> Any:
        """One attempt: a slot, the call counted against the run's cap, the request and its
        answer; throttles are waited out here."""
        while True:
            slot = held.pop() if held else self.limiter.acquire()
            # Counted once it has its slot: a call that waited for one and was stopped
            # never counted, so the cap is reached by calls that go, not by waiting ones.
            try:
                self.stats.take_call()
            except CapReached:
                self.limiter.release(slot)
                raise
            try:
                started = time.perf_counter()
                sent.append(datetime.now(UTC))
                response = self._send(http, method, url, json_body, slot)
                # --log-level debug: each request, by its path (never the query: with
                # auth = "query" it holds the keys) and how long it took.
                self._on_event("request", method=method, path=path,
                               status=response.status_code,
                               ms=round((time.perf_counter() - started) * 1000, 1),
                               **_about(url, json_body))
                return classify(response.status_code, response.content, self._forms)
            except ThrottledError as exc:
                self._throttled(exc, path, throttles)

    def _throttled(self, exc: ThrottledError, path: str, throttles: list[int]) -> None:
        """A throttle: the limiter adopts what it states and pauses; the call waits and
        goes again, unless it was throttled max_throttle_waits times already."""
        self.stats.add(throttled=1)
        throttles[0] += 1
        new_limit = self.limiter.throttled(exc.calls, exc.period_s)
        self._on_event("throttled", path=path, status=exc.status_code,
                       stated_calls=exc.calls, stated_period_s=exc.period_s,
                       new_limit=new_limit)
        if throttles[0] >= self.cfg.max_throttle_waits:
            raise StillThrottled(f"still rate-limited after {throttles[0]} waits; another "
                                 f"integration may be using the account's whole budget"
                                 ) from None

    def _send(self, http: httpx.Client, method: str, url: httpx.URL, json_body: Any,
              slot: float) -> httpx.Response:
        """The request; connections that fail again and again (any thread) mean the host
        is wrong or down: UnreachableError stops the run."""
        try:
            response = http.request(method, url, json=json_body,
                                    extensions={"trace": self._tracer(slot)})
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            if self.stats.connection(ok=False) >= UNREACHABLE_AFTER:
                raise UnreachableError(
                    f"cannot reach [lsq].base_url ({httpx.URL(self.cfg.base_url).host}: "
                    f"{self._transport_error(exc)}); nothing was marked failed, the next run "
                    f"continues; `lsq-sync doctor` checks the host") from None
            raise
        self.stats.connection(ok=True)
        return response

    def _tracer(self, slot: float) -> Callable[[str, Any], None]:
        def trace(event: str, _info: Any) -> None:
            if event == "http11.send_request_headers.started":
                self.limiter.sent(slot)
        return trace

    def backoff(self, attempt: int) -> float:
        """Exponential with jitter: half fixed, half random, capped."""
        full = min(MAX_BACKOFF_S, self.cfg.retry_backoff_s * 2 ** (attempt - 1))
        return float(full / 2 + random.uniform(0, full / 2))

    def _as_transient(self, exc: BaseException) -> TransientError:
        if isinstance(exc, TransientError):
            return exc
        assert isinstance(exc, httpx.TransportError)
        return self._transport_error(exc)

    def _transport_error(self, exc: httpx.TransportError) -> TransientError:
        if isinstance(exc, httpx.TimeoutException):
            return TransientError(f"no answer within {self.cfg.timeout_s:g}s "
                                  f"({type(exc).__name__})")
        detail = self.redact(str(exc))[:200]
        return TransientError(f"connection failed ({type(exc).__name__}: {detail})")


