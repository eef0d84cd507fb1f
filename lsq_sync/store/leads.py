"""Lead ids from [leads].query: streamed in batches, each checked (a GUID, trimmed)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql.elements import TextClause

from lsq_sync.errors import ConfigError
from lsq_sync.store.db import describe
from lsq_sync.store.types import UTCDateTime

FETCH_BATCH = 5000
GUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def check_lead_id(value: Any) -> tuple[str | None, str | None]:
    """(the id, None) if usable; (None, why not) otherwise. LeadSquared ids are GUIDs."""
    if value is None:
        return None, "NULL"
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            value = bytes(value).decode("ascii")
        except UnicodeDecodeError:
            return None, "binary value"
    if not isinstance(value, str):
        return None, f"a {type(value).__name__}, not a GUID"
    candidate = value.strip()
    if not candidate:
        return None, "empty"
    if not GUID_RE.fullmatch(candidate):
        shown = candidate if len(candidate) <= 60 else candidate[:57] + "..."
        return None, f"{shown!r} is not a GUID"
    return candidate, None


def uses_param(query: str, name: str) -> bool:
    """Whether the query names :`name` (as _statement binds it)."""
    return re.search(rf"(?<!:):{name}\b", query) is not None


def _statement(query: str, available: dict[str, Any]) -> tuple[TextClause, dict[str, Any]]:
    """The query with the parameters it names bound (datetimes as UTC timestamps)."""
    used = {k: v for k, v in available.items() if re.search(rf"(?<!:):{k}\b", query)}
    stmt = text(query)
    typed = [bindparam(k, type_=UTCDateTime()) for k, v in used.items()
             if isinstance(v, datetime) or (v is None and k == "last_success")]
    if typed:
        stmt = stmt.bindparams(*typed)
    return stmt, used


def stream_query(engine: Engine, query: str, params: dict[str, Any] | None = None,
                 batch: int = FETCH_BATCH) -> Iterator[list[Any]]:
    """The first column of every row, in batches, without holding all rows in memory."""
    try:
        with engine.connect() as conn:
            stmt, bound = _statement(query, params or {})
            result = conn.execution_options(stream_results=True, yield_per=batch).execute(
                stmt, bound)
            if not result.returns_rows or not result.keys():
                raise ConfigError("[leads].query returned no columns; its first column must be "
                                  "the lead id")
            for part in result.partitions(batch):
                yield [row[0] for row in part]
    except ConfigError:
        raise
    except SQLAlchemyError as exc:
        raise ConfigError(f"[leads].query failed: {describe(exc)}; fix the query or "
                          f"[leads].url") from None
