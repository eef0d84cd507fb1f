"""The ASGI application `listen` serves: the webhook path, and /healthz."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

import orjson

from lsq_sync.config import ListenConfig
from lsq_sync.errors import StoreError
from lsq_sync.leadsquared.webhooks import BadWebhook, parse
from lsq_sync.listen.writer import HintWriter
from lsq_sync.logs import Logger
from lsq_sync.store.types import utcnow

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

BODY_TIMEOUT_S = 10.0   # a client that sends no byte of its body for this long gets 408
COMMIT_TIMEOUT_S = 20.0  # a database slower than this to take a hint: 503
HEALTH_TIMEOUT_S = 5.0
LOG_FIRST = 20          # refusals of each kind logged one by one; then every LOG_EVERY-th
LOG_EVERY = 1000


class WebhookApp:
    """POST {path} with the secret header: the body's leads and tasks become hints, and the
    answer comes once they are committed. GET/HEAD {path}: 200 (LeadSquared checks it).
    GET /healthz: 200 while the database answers."""

    def __init__(self, settings: ListenConfig, writer: HintWriter, log: Logger,
                 healthy: Callable[[], bool]) -> None:
        self.settings = settings
        self.writer = writer
        self.log = log
        self.healthy = healthy
        self.max_body = settings.max_body_kb * 1024
        self._secret = settings.secret.reveal().encode()
        self._header = settings.header.lower().encode("latin-1")
        self._refused: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if path == "/healthz" and method in ("GET", "HEAD"):
            ok = await self._health()
            await _answer(send, 200 if ok else 503, {"ok": ok})
        elif path == self.settings.path and method in ("GET", "HEAD"):
            await _answer(send, 200, {"ok": True})
        elif path == self.settings.path and method == "POST":
            status, body = await self._webhook(scope, receive)
            await _answer(send, status, body)
        elif path == self.settings.path:
            await _answer(send, 405, {"ok": False, "error": "POST webhooks here"})
        else:
            await _answer(send, 404, {"ok": False, "error": "not found"})

    async def _health(self) -> bool:
        try:
            return await asyncio.wait_for(asyncio.to_thread(self.healthy), HEALTH_TIMEOUT_S)
        except (TimeoutError, Exception):  # any failure of the check is "not healthy"
            return False

    async def _webhook(self, scope: Scope, receive: Receive) -> tuple[int, dict[str, Any]]:
        headers = dict(scope["headers"])  # a repeated header: the last one counts
        given = headers.get(self._header)
        if given is None or not hmac.compare_digest(given, self._secret):
            return self._refuse("unauthorized", 401, "missing or wrong secret header")
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return self._refuse("too_large", 413,
                                f"body over {self.settings.max_body_kb} KB")
        body = await self._body(receive)
        if body is None:
            return self._refuse("too_large", 413, f"body over {self.settings.max_body_kb} KB")
        if isinstance(body, str):
            return self._refuse("timeout", 408, body)
        event = _event(scope.get("query_string", b""))
        ctype = headers.get(b"content-type", b"").decode("latin-1")
        try:
            found = parse(body, ctype, event=event)
        except BadWebhook as exc:
            # LeadSquared may disable a webhook that keeps getting errors: 200, and say why.
            self._refuse("no_lead", 200, str(exc))
            return 200, {"ok": False, "error": str(exc)}
        future = self.writer.submit(found, utcnow())
        try:
            count = await asyncio.wait_for(asyncio.wrap_future(future), COMMIT_TIMEOUT_S)
        except (StoreError, TimeoutError):
            return self._refuse("unavailable", 503, "the database cannot take the hint now")
        self.writer.count("accepted")
        return 200, {"ok": True, "hints": count}

    async def _body(self, receive: Receive) -> bytes | str | None:
        """The whole body; None when it grows past the limit; a reason when it stalls."""
        parts: list[bytes] = []
        size = 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), BODY_TIMEOUT_S)
            except TimeoutError:
                return f"no body byte for {BODY_TIMEOUT_S:g} s"
            if message["type"] == "http.disconnect":
                return "the client went away"
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)

    def _refuse(self, outcome: str, status: int, why: str) -> tuple[int, dict[str, Any]]:
        """Count and (sparingly) log a webhook not taken; never with the secret or body."""
        self.writer.count(outcome)
        seen = self._refused[outcome] = self._refused.get(outcome, 0) + 1
        if seen <= LOG_FIRST or seen % LOG_EVERY == 0:
            self.log.warning("webhook_refused", outcome=outcome, status=status, reason=why,
                             so_far=seen)
        return status, {"ok": False, "error": why}


def _event(query: bytes) -> str | None:
    """?event=17 on the webhook's URL: which event it is for (the body may not say)."""
    values = parse_qs(query.decode("latin-1")).get("event", [])
    value = values[0].strip() if values else ""
    return value[:32] if value.isdigit() else None


async def _answer(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = orjson.dumps(body)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
