"""structlog setup: console on a TTY, JSON lines otherwise, stdlib loggers routed alike."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger

from lsq_sync.redact import redact, secret_forms

# What every module logs through: structlog's stdlib-backed logger (configure() wraps
# the stdlib logger in it), so log calls are type-checked.
Logger = structlog.stdlib.BoundLogger


class Redactor:
    """Replaces every form of every secret in every string of an event."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.forms = secret_forms(secrets)

    def __call__(self, _logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
        if not self.forms:
            return event
        return {k: self._clean(v) for k, v in event.items()}

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return redact(value, self.forms)
        if isinstance(value, dict):
            return {k: self._clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean(v) for v in value]
        return value


class _BarAwareHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Clears the progress bar before a log line and draws it again after."""

    bar: Any = None

    def emit(self, record: logging.LogRecord) -> None:
        bar = _BarAwareHandler.bar
        if bar is not None:
            bar.clear()
        super().emit(record)
        if bar is not None:
            bar.redraw()


_json: bool | None = None  # how the last configure() renders; None before it ran


def json_mode() -> bool:
    """True when log lines are JSON: then a command's last word is a JSON event too."""
    return bool(_json)


def forget() -> None:
    """A new command starts: until it configures logging, its last word is plain text."""
    global _json
    _json = None


def wants_console(fmt: str, stream: TextIO) -> bool:
    if fmt == "console":
        return True
    if fmt == "json":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def wants_color(stream: TextIO, env: Mapping[str, str] | None = None,
                no_color: bool = False) -> bool:
    """Colours as people expect (no-color.org, force-color.org): --no-color or NO_COLOR
    (any value) turn them off, FORCE_COLOR turns them on, TERM=dumb off; else a terminal
    gets them."""
    env = os.environ if env is None else env
    if no_color or env.get("NO_COLOR"):
        return False
    if env.get("FORCE_COLOR"):
        return True
    if env.get("TERM") == "dumb":
        return False
    return wants_console("auto", stream)


def configure(fmt: str = "auto", level: str = "info", secrets: Iterable[str] = (),
              stream: TextIO | None = None, *, no_color: bool = False) -> bool:
    """Configure structlog and the stdlib root logger; returns True for console output."""
    global _json
    stream = stream or sys.stderr
    console = wants_console(fmt, stream)
    _json = not console
    redactor = Redactor(secrets)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redactor,
    ]
    renderer: Any
    if console:
        renderer = structlog.dev.ConsoleRenderer(colors=wants_color(stream, no_color=no_color),
                                                 exception_formatter=structlog.dev.plain_traceback)
    else:
        renderer = structlog.processors.JSONRenderer(default=str)
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, redactor, renderer],
    )
    handler = _BarAwareHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    numeric = getattr(logging, level.upper(), logging.INFO)
    root.setLevel(numeric)
    # Libraries speak only when something is wrong: httpx logs every request URL at
    # INFO (with query auth, that URL holds the keys), sqlalchemy every statement.
    for name in ("httpx", "httpcore", "sqlalchemy", "urllib3", "alembic"):
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    return console


def set_progress_bar(bar: Any) -> None:
    _BarAwareHandler.bar = bar


def get_logger(name: str = "lsq_sync") -> Logger:
    logger: Logger = structlog.stdlib.get_logger(name)
    return logger


