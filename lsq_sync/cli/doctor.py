"""`lsq-sync doctor`: each thing a run needs, checked in order, with what to do about it."""

from __future__ import annotations

import socket
from dataclasses import dataclass, replace
from typing import Any

import httpx

from lsq_sync.cli.render import safe
from lsq_sync.config import Config, ListenConfig
from lsq_sync.core.app import Context, make_client
from lsq_sync.errors import LsqSyncError
from lsq_sync.logs import get_logger
from lsq_sync.store import db, runs, schema
from lsq_sync.store import leads as leads_mod


@dataclass
class Check:
    name: str
    ok: bool
    message: str


def _api_host(answer: Any, configured: httpx.URL) -> httpx.URL | None:
    """The account's API host from UserByAccessKey.Get's answer, as a URL (without a
    scheme of its own, the configured one)."""
    urls = answer.get("LSQCommonServiceURLs") if isinstance(answer, dict) else None
    value = urls.get("api") if isinstance(urls, dict) else None
    if not isinstance(value, str) or not value.strip():
        return None
    value = value.strip()
    try:
        url = httpx.URL(value if "://" in value else f"{configured.scheme}://{value}")
    except httpx.InvalidURL:
        return None
    return url if url.host else None


def _origin(url: httpx.URL) -> str:
    """scheme://host[:port], the port only when it is not the scheme's own."""
    port = f":{url.port}" if url.port is not None else ""
    return f"{url.scheme}://{url.host}{port}"


def run_checks(cfg: Config) -> list[Check]:
    """Every check `lsq-sync doctor` makes, in order; later ones skip what earlier broke."""
    checks = [Check("config", True, f"loaded from {cfg.source}")]
    engine = None
    try:
        engine = db.make_engine(cfg.database.url)
        db.check_connection(engine)
        checks.append(Check("database", True, f"{db.safe_url(engine.url)} answers"))
    except LsqSyncError as exc:
        checks.append(Check("database", False, str(exc)))
        engine = None
    current = False
    if engine is not None:
        try:
            schema.require_current(engine)
            checks.append(Check("schema", True, f"at revision {schema.head()} (current)"))
            current = True
        except LsqSyncError as exc:
            checks.append(Check("schema", False, str(exc)))
    try:
        source = db.make_engine(cfg.leads_url, key="[leads].url")
        params = {"last_success": runs.last_success(engine, cfg.leads.overlap)
                  if engine and current else None}
        usable = total = 0
        for batch in leads_mod.stream_query(source, cfg.leads.query, params):
            total += len(batch)
            usable += sum(1 for value in batch if leads_mod.check_lead_id(value)[0])
        ok = usable > 0
        checks.append(Check("leads query", ok, f"{total} rows, {usable} usable lead ids"
                            + ("" if ok else "; a pull would do nothing")))
    except LsqSyncError as exc:
        checks.append(Check("leads query", False, str(exc)))
    try:
        cfg.lsq.require_credentials()
        log = get_logger("lsq_sync.doctor")
        # One try with a short timeout: doctor says what is wrong, it does not wait it out.
        once = replace(cfg, lsq=replace(cfg.lsq, timeout_s=min(cfg.lsq.timeout_s, 5.0),
                                        max_attempts=1))
        with make_client(once, Context(), log) as client:
            answer = client.user_by_access_key()
        who = answer.get("EmailAddress") if isinstance(answer, dict) else None
        zone = answer.get("TimeZone") if isinstance(answer, dict) else None
        checks.append(Check("credentials", True, f"accepted (user {who or '?'}, account time "
                                                  f"zone {zone or '?'})"))
        configured = httpx.URL(cfg.lsq.base_url)
        api = _api_host(answer, configured)
        if api is not None and (api.host.lower(), api.port) != (configured.host.lower(),
                                                                  configured.port):
            checks.append(Check("api host", False,
                                f"[lsq].base_url names {safe(configured.netloc.decode())}, but "
                                f"the account's API host is {safe(api.netloc.decode())}: set "
                                f"base_url = \"{safe(_origin(api))}\""))
        elif api is not None:
            checks.append(Check("api host", True,
                                f"{safe(api.netloc.decode())} is the account's own host"))
    except LsqSyncError as exc:
        checks.append(Check("credentials", False, str(exc)))
    checks.append(check_listen(cfg.listen))
    return checks


MIN_SECRET = 16
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def check_listen(settings: ListenConfig) -> Check:
    """[listen]: a secret worth the name, and a port that `listen` can bind (or where a
    listener already answers)."""
    if not settings.secret:
        return Check("listen", True, "not set up ([listen].secret is empty; only "
                                     "`lsq-sync listen` needs it)")
    if len(settings.secret.reveal()) < MIN_SECRET:
        return Check("listen", False, f"[listen].secret is shorter than {MIN_SECRET} "
                                      f"characters: webhooks are authenticated by it alone")
    where = f"http://{settings.host}:{settings.port}{settings.path}"
    note = "" if settings.host in LOOPBACK else " (not loopback: put TLS in front)"
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((settings.host, settings.port))
        return Check("listen", True, f"can listen on {safe(where)}{note}")
    except OSError as exc:
        error = exc.strerror or str(exc)
    try:
        health = httpx.get(f"http://{settings.host}:{settings.port}/healthz", timeout=2)
        if health.status_code in (200, 503):
            return Check("listen", True, f"a listener answers on {safe(where)}{note}")
    except httpx.HTTPError:
        pass
    return Check("listen", False, f"cannot bind {safe(settings.host)}:{settings.port} "
                                  f"({error}): choose another [listen].port")
