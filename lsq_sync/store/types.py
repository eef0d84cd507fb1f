"""Column types that behave the same on SQLite, PostgreSQL and MySQL/MariaDB."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import JSON, DateTime, Text
from sqlalchemy.dialects import mysql, postgresql
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
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.TIMESTAMP(timezone=True))
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


def json_type() -> TypeEngine[Any]:
    """JSONB on PostgreSQL, JSON elsewhere (MariaDB stores it as checked LONGTEXT)."""
    return JSON().with_variant(postgresql.JSONB(), "postgresql")


def long_text() -> TypeEngine[Any]:
    """Text of any length a task can hold: MEDIUMTEXT (16 MB) on MySQL/MariaDB, whose TEXT
    stops at 64 KB; TEXT elsewhere."""
    return Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")


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
