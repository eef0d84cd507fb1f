"""Column types that behave the same on SQLite, PostgreSQL and MySQL/MariaDB."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import JSON, DateTime, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement
from sqlalchemy.types import TypeDecorator, TypeEngine


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in Python; timestamptz on PostgreSQL, naive UTC elsewhere.

    Naive values are refused on the way in: a naive datetime is a bug waiting for a
    server in another time zone.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        # The dialects' own types are imported here, on the dialect in use: importing them
        # all costs every command 40 ms of CPU.
        if dialect.name in ("mysql", "mariadb"):
            from sqlalchemy.dialects.mysql import DATETIME
            return dialect.type_descriptor(DATETIME(fsp=6))
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import TIMESTAMP
            return dialect.type_descriptor(TIMESTAMP(timezone=True))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return as_utc(value)


def as_utc(value: Any) -> datetime | None:
    """A stored time as an aware UTC datetime; ValueError if it is none."""
    if value is None:
        return None
    if isinstance(value, str):  # SQLite rows written by other tools
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise ValueError(f"not a datetime: {value!r}")
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def as_utc_or_none(value: Any) -> datetime | None:
    """as_utc, with None for what another system wrote that is no time at all."""
    try:
        return as_utc(value)
    except ValueError:
        return None


def json_dumps(value: Any, *, sort_keys: bool = False) -> str:
    """Compact JSON text, by orjson (several times faster than the json module).

    Integers beyond 64 bits, which orjson refuses and JSON allows, fall back to the json
    module; datetimes are written as ISO 8601 by both.
    """
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else 0).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value, sort_keys=sort_keys, separators=(",", ":"),
                          default=_iso_datetime)


def _iso_datetime(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class _Json(TypeDecorator[Any]):
    """JSONB on PostgreSQL, JSON elsewhere (MariaDB stores it as checked LONGTEXT)."""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB
            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(JSON())


class _LongText(TypeDecorator[str]):
    """Text of any length a task can hold: MEDIUMTEXT (16 MB) on MySQL/MariaDB, whose TEXT
    stops at 64 KB; TEXT elsewhere."""

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            from sqlalchemy.dialects.mysql import MEDIUMTEXT
            return dialect.type_descriptor(MEDIUMTEXT())
        return Text()  # not type_descriptor: PostgreSQL's would adapt it to VARCHAR


def json_type() -> TypeEngine[Any]:
    """JSONB on PostgreSQL, JSON elsewhere."""
    return _Json()


def long_text() -> TypeEngine[Any]:
    """MEDIUMTEXT on MySQL/MariaDB, TEXT elsewhere."""
    return _LongText()


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


class utc_timestamp(FunctionElement[datetime]):
    """The database's current UTC time, for server defaults of rows other systems insert."""

    type = UTCDateTime()
    inherit_cache = True
    name = "utc_timestamp"


@compiles(utc_timestamp)
def _utc_default(element: Any, compiler: Any, **kw: Any) -> str:
    return "CURRENT_TIMESTAMP"  # SQLite: UTC text


@compiles(utc_timestamp, "postgresql")
def _utc_pg(element: Any, compiler: Any, **kw: Any) -> str:
    return "now()"  # timestamptz: an instant, shown in any zone


@compiles(utc_timestamp, "mysql")
@compiles(utc_timestamp, "mariadb")
def _utc_mysql(element: Any, compiler: Any, **kw: Any) -> str:
    return "(UTC_TIMESTAMP(6))"  # CURRENT_TIMESTAMP would follow the session's time zone
