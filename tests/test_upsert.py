"""The bulk upsert stores exactly what SQLAlchemy's own statement stores, on every dialect."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, event, select
from sqlalchemy.engine import Engine

from lsq_sync.store import db, upsert
from lsq_sync.store.models import tasks
from lsq_sync.store.tasks import raw_hash

T0 = datetime(2026, 3, 1, 9, 30, 15, 123456, tzinfo=UTC)
TRICKY = ["it's", 'say "hi"', "back\\slash", "line\nbreak\r\n", "tab\tand\x1a", "50% off %s %(x)s",
          "?", "':1", "ünïcødé ✓ 🚀", "", "  padded  ", "-- not a comment", "'); DROP TABLE x; --"]


def task(task_id: str, name: str | None = "n", **changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "task_id": task_id, "lead_id": "lead-1", "name": name, "description": None,
        "due_date": T0 + timedelta(days=3), "created_on": T0.replace(microsecond=0),
        "owner_id": "o-1", "owner_name": "Asha", "created_by": None, "created_by_name": None,
        "status": "Pending", "reminder_minutes": 15, "first_seen_at": T0, "last_synced_at": T0,
        "changed_at": T0, "deleted_at": None,
        "raw": {"TaskID": task_id, "Name": name, "n": [1, 2.5, None, True]},
    }
    row.update(changes)
    row["raw_hash"] = raw_hash(row["raw"])
    return row


def stored(engine: Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        return {r.task_id: dict(r._mapping) for r in conn.execute(select(tasks))}


def through_sqlalchemy(engine: Engine, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        conn.execute(upsert.upsert_statement(conn, tasks, keep=["first_seen_at"]), rows)


def through_bulk(engine: Engine, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        upsert.upsert(conn, tasks, rows, keep=["first_seen_at"])


def without_key(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in ("task_id", "raw", "raw_hash")}


def test_bulk_and_sqlalchemy_store_the_same_and_keep_first_seen(engine: Engine) -> None:
    first = [task(f"a{i}", name=text, description=text) for i, text in enumerate(TRICKY)]
    twin = [{**row, "task_id": "b" + row["task_id"][1:]} for row in first]
    through_bulk(engine, first)
    through_sqlalchemy(engine, twin)
    saved = stored(engine)
    assert len(saved) == 2 * len(TRICKY)
    for row in first:
        bulk, reference = saved[row["task_id"]], saved["b" + row["task_id"][1:]]
        assert without_key(bulk) == without_key(reference)
        assert bulk["name"] == row["name"] and bulk["description"] == row["description"]
        assert bulk["due_date"] == row["due_date"]
        assert bulk["raw"]["Name"] == row["name"]

    later = T0 + timedelta(hours=1)
    changed = [task(r["task_id"], name="renamed", first_seen_at=later, last_synced_at=later,
                    deleted_at=later, reminder_minutes=None) for r in first]
    through_bulk(engine, changed)
    for row in stored(engine).values():
        if row["task_id"].startswith("a"):
            assert row["name"] == "renamed" and row["reminder_minutes"] is None
            assert row["last_synced_at"] == later and row["deleted_at"] == later
            assert row["first_seen_at"] == T0  # kept: the row existed


def test_an_empty_batch_sends_nothing(engine: Engine) -> None:
    sent: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: sent.append(a[2]))
    through_bulk(engine, [])
    assert not [s for s in sent if "lsq_tasks" in s]


def test_naive_datetimes_are_refused(engine: Engine) -> None:
    with pytest.raises(ValueError, match="naive datetime given to"):
        through_bulk(engine, [task("t1", due_date=datetime(2026, 1, 1))])
    assert stored(engine) == {}


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
                        max_size=60), min_size=1, max_size=8))
def test_any_text_survives_the_bulk_path(engine: Engine, texts: list[str]) -> None:
    # NUL is left out: PostgreSQL text cannot hold it, whichever way it is sent.
    rows = [task(f"h{i}", name=text, owner_name=text[:255], description=text * 3,
                 raw={"TaskID": f"h{i}", "Name": text, text: text})
            for i, text in enumerate(texts)]
    through_bulk(engine, rows)
    saved = stored(engine)
    for row in rows:
        got = saved[row["task_id"]]
        assert (got["name"], got["owner_name"], got["description"]) == (
            row["name"], row["owner_name"], row["description"])
        assert got["raw"] == row["raw"] and got["raw_hash"] == row["raw_hash"]


def test_pymysql_folds_a_batch_into_few_statements(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """PyMySQL's executemany writes multi-row statements only when it recognises the
    statement's shape: this holds it to that (one statement per row would be 20 times
    slower), and to its statement size limit."""
    if not upsert.is_mysql(engine.dialect):
        pytest.skip("PyMySQL's executemany")
    import pymysql.cursors

    def run(rows: list[dict[str, Any]]) -> int:
        with engine.connect() as conn:
            status = "SHOW SESSION STATUS LIKE 'Com_insert'"
            before = int(conn.exec_driver_sql(status).one()[1])
            upsert.upsert(conn, tasks, rows, keep=["first_seen_at"])
            conn.commit()
            return int(conn.exec_driver_sql(status).one()[1]) - before

    assert run([task(f"s{i:03d}", description="x" * 200) for i in range(60)]) == 1
    monkeypatch.setattr(pymysql.cursors.Cursor, "max_stmt_length", 4000)
    statements = run([task(f"s{i:03d}", description="y" * 200) for i in range(60)])
    assert 3 < statements < 60
    saved = stored(engine)
    assert len(saved) == 60 and {r["description"] for r in saved.values()} == {"y" * 200}


def test_mysql_without_backslash_escapes(engine: Engine) -> None:
    if not upsert.is_mysql(engine.dialect):
        pytest.skip("a MySQL sql_mode")
    rows = [task(f"q{i}", name=text) for i, text in enumerate(TRICKY)]
    with engine.begin() as conn:
        conn.exec_driver_sql("SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')")
        upsert.upsert(conn, tasks, rows, keep=["first_seen_at"])
        conn.exec_driver_sql(
            "SET SESSION sql_mode = REPLACE(@@sql_mode, 'NO_BACKSLASH_ESCAPES', '')")
    saved = stored(engine)
    assert [saved[r["task_id"]]["name"] for r in rows] == TRICKY


def test_a_driver_with_named_parameters_gets_sqlalchemys_statement(db_url: str) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("sqlite3 takes named parameters too")
    engine = create_engine(db.normalize_url(db_url), paramstyle="named")
    sent: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: sent.append(a[2]))
    through_bulk(engine, [task("t1", name=TRICKY[0])])
    assert stored(engine)["t1"]["name"] == TRICKY[0]
    assert any(":task_id" in s for s in sent)
    engine.dispose()
