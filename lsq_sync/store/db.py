"""Create engines for the three supported dialects and turn driver errors into ours."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import DBAPIError, NoSuchModuleError, SQLAlchemyError
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random

from lsq_sync.errors import ConfigError, StoreError
from lsq_sync.redact import PASSWORD_PARAMS
from lsq_sync.store.types import json_dumps

# Plain dialect names get the drivers the extras install, not SQLAlchemy's defaults.
_DEFAULT_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}
_EXTRAS = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}


def normalize_url(url: str | URL) -> URL:
    parsed = make_url(url)
    if parsed.drivername in _DEFAULT_DRIVERS:
        parsed = parsed.set(drivername=_DEFAULT_DRIVERS[parsed.drivername])
    return parsed



def safe_url(url: str | URL) -> str:
    """The URL with its password masked (in the userinfo and in any password query
    parameter), for messages and logs."""
    try:
        parsed = normalize_url(url)
        hidden = {k: "***" for k in parsed.query if k.lower() in PASSWORD_PARAMS}
        if hidden:
            parsed = parsed.update_query_dict(hidden)
        return parsed.render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database URL>"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    # WAL lets the leads query stream from one connection while another commits, and
    # lets `runs` read while a pull writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


_UTC_SESSION = {"postgresql": "SET TIME ZONE 'UTC'", "mysql": "SET time_zone = '+00:00'",
                "mariadb": "SET time_zone = '+00:00'"}


def _utc_session(statement: str) -> Callable[[Any, Any], None]:
    """Every connection's session in UTC, whatever the server, database, role or URL set:
    a timestamp compared with a bound UTC instant (the leads query's :last_success), and
    NOW() in a user's query, then mean UTC."""
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute(statement)
        cursor.close()
        dbapi_conn.commit()  # a SET inside a transaction rolled back would be undone
    return on_connect


def _time_statements(engine: Engine) -> None:
    """--log-level debug: every statement's first line and how long it took (its
    parameters are never logged: they hold data)."""
    log = logging.getLogger("lsq_sync.sql")

    def before(conn: Any, _cursor: Any, _statement: str, _params: Any, context: Any,
               _many: bool) -> None:
        context._lsq_started = time.perf_counter()

    def after(conn: Any, _cursor: Any, statement: str, _params: Any, context: Any,
              _many: bool) -> None:
        took = (time.perf_counter() - getattr(context, "_lsq_started", time.perf_counter()))
        first = " ".join(statement.split())[:160]
        log.debug("sql %.1f ms %s", took * 1000, first)

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)


def make_engine(url: str | URL, *, key: str = "[database].url") -> Engine:
    """An engine for `url`; a missing driver is a config error naming the extra."""
    parsed = normalize_url(url)
    backend = parsed.get_backend_name()
    kwargs: dict[str, Any] = {"json_serializer": json_dumps}
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise ConfigError(f"{key}: an in-memory SQLite database cannot be shared "
                              f"between runs; give a file path (sqlite:///lsq_sync.db)")
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs["pool_pre_ping"] = True
    if parsed.drivername == "postgresql+psycopg":
        # psycopg prepares a statement after 5 runs, and PostgreSQL may then keep a
        # generic plan made while lsq_tasks was empty: a sequential scan for every batch
        # of a backfill, slower with each row. Custom plans keep the saved parse.
        kwargs["connect_args"] = {"options": "-c plan_cache_mode=force_custom_plan"}
    try:
        engine = create_engine(parsed, **kwargs)
    except (NoSuchModuleError, ModuleNotFoundError, ImportError) as exc:
        extra = _EXTRAS.get(backend)
        hint = f"pip install 'lsq-sync[{extra}]'" if extra else "install its driver"
        raise ConfigError(f"{key}: no driver for {parsed.drivername} ({exc}); {hint}") from None
    except (SQLAlchemyError, ValueError) as exc:
        raise ConfigError(f"{key}: {exc}") from None
    if logging.getLogger("lsq_sync").isEnabledFor(logging.DEBUG):
        _time_statements(engine)
    if backend == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    elif backend in _UTC_SESSION:
        event.listen(engine, "connect", _utc_session(_UTC_SESSION[backend]))
    if parsed.drivername == "postgresql+psycopg":
        # psycopg's own executemany sends one INSERT per row; SQLAlchemy's "insertmanyvalues"
        # folds a batch into multi-row VALUES statements, several times faster.
        engine.dialect.use_insertmanyvalues_wo_returning = True
    return engine




def describe(exc: BaseException) -> str:
    """One line from a driver error, without SQL parameters (they may hold data)."""
    text_ = str(exc.orig) if isinstance(exc, DBAPIError) and exc.orig is not None else str(exc)
    first = text_.strip().splitlines()[0] if text_.strip() else type(exc).__name__
    return first[:300]


def check_connection(engine: Engine) -> None:
    """Raise StoreError with one clear line if the database cannot be reached."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        raise StoreError(
            f"cannot connect to the database {safe_url(engine.url)}: {describe(exc)}"
        ) from None


T = TypeVar("T")

# A transaction the database chose to abort because another one held what it needed:
# MySQL/MariaDB 1213 (deadlock) and 1205 (lock wait timeout), PostgreSQL 40P01 (deadlock)
# and 40001 (serialization failure). Run again, it goes through.
_CONFLICT_CODES = {1213, 1205}
_CONFLICT_STATES = {"40P01", "40001"}
CONFLICT_ATTEMPTS = 5


def is_conflict(exc: BaseException) -> bool:
    """Whether `exc` is a transaction aborted by a lock conflict with another one."""
    orig = exc.orig if isinstance(exc, DBAPIError) else None
    if orig is None:
        return False
    if getattr(orig, "sqlstate", None) in _CONFLICT_STATES:  # psycopg
        return True
    args: tuple[Any, ...] = getattr(orig, "args", ())
    return bool(args) and args[0] in _CONFLICT_CODES  # PyMySQL


def retry_conflicts(transaction: Callable[[], T], attempts: int = CONFLICT_ATTEMPTS) -> T:
    """Run `transaction` (a whole unit of work: it opens and commits its own transaction)
    again when the database aborts it over a lock conflict; any other error goes up."""
    retrying = Retrying(retry=retry_if_exception(is_conflict),
                        stop=stop_after_attempt(attempts),
                        wait=wait_random(0.01, 0.2), reraise=True)
    return retrying(transaction)


CHUNK = 500  # ids per IN list: well inside every dialect's parameter limit


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    """`items` in slices of `size`, for IN lists."""
    for start in range(0, len(items), size):
        yield items[start:start + size]
