"""Lead ids: what counts as one, and streaming them from a query in batches."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from lsq_sync.errors import ConfigError
from lsq_sync.store.leads import check_lead_id, stream_query

GUID = "6f75b09d-0187-45d6-86dd-f848bd5a0aca"


@pytest.mark.parametrize(("value", "expected"), [
    (GUID, GUID), (f"  {GUID}\n", GUID), (GUID.upper(), GUID.upper()),
    (GUID.encode(), GUID),
])
def test_good_ids(value: object, expected: str) -> None:
    assert check_lead_id(value) == (expected, None)


@pytest.mark.parametrize(("value", "reason"), [
    (None, "NULL"), ("", "empty"), ("   ", "empty"), (12345, "a int"), (1.5, "a float"),
    ("x" * 500, "not a GUID"), (f"{GUID}'; DROP TABLE x; --", "not a GUID"),
    (f"{GUID}&leadId=other", "not a GUID"), (b"\xff\xfe", "binary"),
])
def test_bad_ids_have_a_reason(value: object, reason: str) -> None:
    lead_id, why = check_lead_id(value)
    assert lead_id is None and why is not None and reason in why


def test_stream_query_batches_without_loading_everything(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE many (n INTEGER)"))
        conn.execute(text("INSERT INTO many VALUES (:n)"), [{"n": i} for i in range(2500)])
    batches = list(stream_query(engine, "SELECT n FROM many ORDER BY n", batch=1000))
    assert [len(b) for b in batches] == [1000, 1000, 500]
    assert batches[2][-1] == 2499


def test_a_failing_query_is_a_config_error(engine: Engine) -> None:
    with pytest.raises(ConfigError, match=r"\[leads\]\.query failed"):
        list(stream_query(engine, "SELECT lead_id FROM no_such_table"))


def test_a_statement_without_rows_is_a_config_error(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (a INTEGER)"))
    with pytest.raises(ConfigError, match=r"\[leads\]\.query (returned no columns|failed)"):
        list(stream_query(engine, "DELETE FROM t"))


def test_staging_stops_between_batches_when_asked(engine: Engine) -> None:
    import threading

    from lsq_sync.store import runs
    from lsq_sync.store.worklist import stage
    run_id = runs.start(engine, "pull")
    stop = threading.Event()

    def batches() -> object:
        yield [GUID]
        stop.set()  # a signal arrives while the query streams
        yield ["6f75b09d-0187-45d6-86dd-f848bd5a0acb"]

    staged = stage(engine, run_id, batches(), stop=stop)  # type: ignore[arg-type]
    assert staged.total == 1
