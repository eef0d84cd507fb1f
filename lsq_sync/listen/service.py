"""Run `listen`: the HTTP server (uvicorn) in a thread, the hint writer, and with
[listen] pull the puller in this thread, until the stop is set."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

import uvicorn
from sqlalchemy import text
from sqlalchemy.engine import Engine

from lsq_sync.config import Config
from lsq_sync.core.app import Context, open_store
from lsq_sync.core.hints import HintPuller
from lsq_sync.core.result import RunResult
from lsq_sync.errors import ConfigError
from lsq_sync.listen.app import WebhookApp
from lsq_sync.listen.writer import HintWriter
from lsq_sync.logs import get_logger

GRACEFUL_S = 10.0  # requests in flight at a stop get this long


@dataclass
class Listening:
    """What `serve` reports once the socket is open (tests and the demo use the port)."""

    host: str
    port: int
    path: str

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"


def serve(cfg: Config, ctx: Context, *, host: str | None = None, port: int | None = None,
          on_ready: Callable[[Listening], None] | None = None) -> RunResult | None:
    """Serve webhooks until `ctx.stop`; returns the puller's run (None without [listen]
    pull). Raises ConfigError for a missing secret or a port that cannot be bound."""
    settings = cfg.listen
    settings.require_secret()
    if settings.pull:
        cfg.lsq.require_credentials()
    log = get_logger("lsq_sync.listen")
    engine = open_store(cfg)
    sock = _bind(host or settings.host, settings.port if port is None else port)
    wake = threading.Event()
    writer = HintWriter(engine, log, wake).start()
    app = WebhookApp(settings, writer, log, lambda: _healthy(engine))
    server = _Server(uvicorn.Config(
        app, lifespan="off", log_config=None, log_level="warning", access_log=False,
        timeout_keep_alive=5, timeout_graceful_shutdown=int(GRACEFUL_S),
        limit_concurrency=1000, h11_max_incomplete_event_size=16 * 1024))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                              name="lsq-listen-http", daemon=True)
    thread.start()
    bound_host, bound_port = sock.getsockname()[:2]
    listening = Listening(str(bound_host), int(bound_port), settings.path)
    result = None
    try:
        if not server.wait_started(ctx):
            raise ConfigError(f"listen could not start its server on {listening.url}")
        log.info("listening", url=listening.url, pull=settings.pull)
        if on_ready is not None:
            on_ready(listening)
        if settings.pull:
            result = HintPuller(cfg, engine, ctx, log, wake).run()
        else:
            while not ctx.stop.wait(1.0):
                pass
    finally:
        server.should_exit = True
        thread.join(GRACEFUL_S + 5)
        writer.close()
        sock.close()
        log.info("listen_stopped")
    return result


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handling: the caller owns the signals."""

    def install_signal_handlers(self) -> None:  # older uvicorn
        pass

    def wait_started(self, ctx: Context, timeout: float = 10.0) -> bool:
        waited = 0.0
        while not self.started and waited < timeout and not self.should_exit:
            if ctx.stop.wait(0.02):
                return False
            waited += 0.02
        return bool(self.started)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and
    # without it an answer's second write waits 40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"listen cannot bind {host}:{port} ({exc.strerror}); choose "
                          f"another [listen].port or --port") from None
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def _healthy(engine: Engine) -> bool:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return True


logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
