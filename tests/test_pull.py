"""End to end over HTTP: pulls against the simulator on every configured dialect."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import Engine

from lsq_sync import app
from lsq_sync.config import Config
from lsq_sync.demo import fill_leads_table
from lsq_sync.errors import AuthError
from lsq_sync.models import sync_runs, tasks
from lsq_sync.pull import PullOptions
from lsq_sync.simulator import Faults, Simulator
from lsq_sync.tasks import parse_date


def synced(engine: Engine, *, live: bool = True) -> dict[str, Any]:
    query = select(tasks)
    if live:
        query = query.where(tasks.c.deleted_at.is_(None))
    with engine.connect() as conn:
        return {row.task_id: row for row in conn.execute(query)}


def assert_matches(engine: Engine, sim: Simulator) -> None:
    """lsq_tasks (live rows) holds exactly the simulator's tasks, field by field."""
    expected = sim.state.all_tasks()
    got = synced(engine)
    assert set(got) == set(expected)
    for task_id, task in expected.items():
        row = got[task_id]
        assert row.lead_id == task["_lead"]
        assert row.name == task["Name"] and row.description == task["Description"]
        assert row.owner_id == task["OwnerID"] and row.owner_name == task["OwnerName"]
        assert row.created_by_name == task["CreatedByName"] and row.status == task["Status"]
        assert row.reminder_minutes == int(task["Reminder"])
        assert row.due_date == parse_date(task["DueDate"])
        assert row.created_on == parse_date(task["CreatedOn"])
        assert row.raw == {k: v for k, v in task.items() if k != "_lead"}


def pull(cfg: Config, **options: Any) -> app.RunResult:
    return app.pull(cfg, PullOptions(**options))


@pytest.fixture
def setup(db_url: str, engine: Engine, sim: Simulator,
          make_config: Callable[..., Config]) -> tuple[Config, Engine, Simulator]:
    fill_leads_table(db_url, sim.state.lead_ids())
    return make_config(sim, db_url), engine, sim


def test_a_pull_matches_the_simulator_exactly(setup: tuple[Config, Engine, Simulator]) -> None:
    cfg, engine, sim = setup
    result = pull(cfg)
    assert result.status == "succeeded"
    c = result.counts
    assert (c.leads_total, c.leads_ok, c.leads_failed) == (40, 40, 0)
    assert c.tasks_upserted == len(sim.state.all_tasks()) > 0
    assert c.api_calls == 40 and c.throttled == 0
    assert_matches(engine, sim)
    with engine.connect() as conn:
        run = conn.execute(select(sync_runs)).one()
        leftovers = conn.execute(text("SELECT COUNT(*) FROM lsq_run_leads")).scalar_one()
    assert run.status == "succeeded" and run.leads_ok == 40 and run.finished_at is not None
    assert run.api_calls == 40 and run.tasks_upserted == c.tasks_upserted
    assert leftovers == 0


def test_a_second_pull_changes_nothing(setup: tuple[Config, Engine, Simulator]) -> None:
    cfg, engine, _sim = setup
    pull(cfg)
    before = {k: dict(v._mapping) for k, v in synced(engine, live=False).items()}
    result = pull(cfg)
    assert (result.counts.tasks_upserted, result.counts.tasks_deleted) == (0, 0)
    after = {k: dict(v._mapping) for k, v in synced(engine, live=False).items()}
    assert before.keys() == after.keys()
    for task_id, old in before.items():
        new = after[task_id]
        assert new["last_synced_at"] >= old["last_synced_at"]
        old.pop("last_synced_at"), new.pop("last_synced_at")
        assert new == old


def test_delete_move_rename_restore_show_up(setup: tuple[Config, Engine, Simulator]) -> None:
    cfg, engine, sim = setup
    pull(cfg)
    state = sim.state
    leads = [lead for lead in state.lead_ids() if len(state.tasks_of(lead)) >= 2]
    a, b, c = leads[:3]
    gone = state.tasks_of(a)[0]["TaskID"]
    renamed = state.tasks_of(b)[0]["TaskID"]
    moved = state.tasks_of(c)[0]["TaskID"]
    state.delete_task(gone)
    state.change_task(renamed, Name="Renamed", Reminder="45")
    state.move_task(moved, a)
    first_seen = synced(engine)[renamed].first_seen_at

    result = pull(cfg)
    assert (result.counts.tasks_upserted, result.counts.tasks_deleted) == (2, 1)
    rows = synced(engine, live=False)
    assert rows[gone].deleted_at is not None and rows[gone].lead_id == a
    assert rows[renamed].name == "Renamed" and rows[renamed].reminder_minutes == 45
    assert rows[renamed].first_seen_at == first_seen
    assert rows[moved].lead_id == a and rows[moved].deleted_at is None
    assert_matches(engine, sim)

    state.restore_task(gone)
    result = pull(cfg)
    assert result.counts.tasks_upserted == 1
    assert synced(engine)[gone].deleted_at is None
    assert_matches(engine, sim)


def test_a_move_to_a_lead_pulled_later_is_not_lost(
        setup: tuple[Config, Engine, Simulator]) -> None:
    cfg, engine, sim = setup
    pull(cfg)
    state = sim.state
    with_tasks = [lead for lead in state.lead_ids() if state.tasks_of(lead)]
    source, target = with_tasks[0], with_tasks[-1]
    moved = state.tasks_of(source)[0]["TaskID"]
    state.move_task(moved, target)
    pull(cfg, lead_ids=[source])
    assert synced(engine, live=False)[moved].deleted_at is not None  # gone from its lead
    pull(cfg, lead_ids=[target])
    row = synced(engine)[moved]
    assert row.lead_id == target and row.deleted_at is None


def test_faults_and_throttling_still_sync_every_lead(
        db_url: str, engine: Engine, make_sim: Callable[..., Simulator],
        make_config: Callable[..., Config]) -> None:
    faults = Faults(bare_500=0.08, malformed=0.05, html_502=0.05, drop=0.05, slow=0.03,
                    slow_s=1.0)
    sim = make_sim(leads=60, rate_calls=15, rate_period_s=0.5, throttle_status=200,
                   faults=faults)
    fill_leads_table(db_url, sim.state.lead_ids())
    # Configured above the account's real limit: the stated one must take over.
    cfg = make_config(sim, db_url, rate_limit_calls=100, rate_limit_period_s=0.5,
                      timeout_s=0.5, max_attempts=10)
    result = pull(cfg)
    assert result.counts.leads_ok == 60 and result.counts.leads_failed == 0
    assert result.counts.throttled > 0
    assert result.counts.api_calls > 60
    assert_matches(engine, sim)


@pytest.mark.parametrize("status", [403, 429])
def test_throttle_statuses(status: int, sqlite_url: str, make_sim: Callable[..., Simulator],
                           make_config: Callable[..., Config]) -> None:
    from lsq_sync import db, schema
    engine = db.make_engine(sqlite_url)
    schema.upgrade(engine)
    sim = make_sim(leads=30, rate_calls=10, rate_period_s=0.3, throttle_status=status)
    fill_leads_table(sqlite_url, sim.state.lead_ids())
    result = pull(make_config(sim, sqlite_url, rate_limit_calls=50, rate_limit_period_s=0.3))
    assert result.counts.leads_ok == 30 and result.counts.throttled > 0
    assert sim.meter.snapshot()["busiest_window"] <= 10
    assert_matches(engine, sim)


def test_a_lead_with_an_mx_error_fails_alone_and_changes_nothing(
        setup: tuple[Config, Engine, Simulator]) -> None:
    cfg, engine, sim = setup
    pull(cfg)
    state = sim.state
    broken = state.lead_id(1)  # mx_error_every=5 breaks indices 1, 6, 11, ...
    kept = state.tasks_of(broken)
    if kept:
        state.delete_task(kept[0]["TaskID"])
    sim.cfg.faults.mx_error_every = 5
    result = pull(cfg)
    assert result.status == "partial"
    assert result.counts.leads_failed == 8 and result.counts.leads_ok == 32
    assert result.counts.api_calls == 40  # logical errors are not retried
    rows = synced(engine, live=False)
    for task in kept:  # the failed lead's tasks are untouched, deletion not applied
        assert rows[task["TaskID"]].deleted_at is None
    with engine.connect() as conn:
        run = conn.execute(select(sync_runs).order_by(sync_runs.c.id.desc())).first()
    assert run is not None and run.status == "partial" and run.leads_failed == 8


def test_a_lead_with_a_malformed_task_fails_alone(
        db_url: str, engine: Engine, make_sim: Callable[..., Simulator],
        make_config: Callable[..., Config]) -> None:
    sim = make_sim(leads=30, faults=Faults(bad_record_every=10))
    fill_leads_table(db_url, sim.state.lead_ids())
    result = pull(make_config(sim, db_url))
    broken = [i for i in (2, 12, 22) if sim.state.tasks_of(sim.state.lead_id(i))]
    assert result.counts.leads_failed == len(broken) > 0
    rows = synced(engine)
    for i in broken:
        assert not any(r.lead_id == sim.state.lead_id(i) for r in rows.values())


def test_401_aborts_and_writes_nothing(db_url: str, engine: Engine, sim: Simulator,
                                       make_config: Callable[..., Config]) -> None:
    fill_leads_table(db_url, sim.state.lead_ids())
    cfg = make_config(sim, db_url, secret_key="wrong")
    with pytest.raises(AuthError):
        pull(cfg)
    assert synced(engine, live=False) == {}
    with engine.connect() as conn:
        run = conn.execute(select(sync_runs)).one()
    assert run.status == "failed" and "HTTP 401" in run.error
    assert run.finished_at is not None


def test_bad_lead_ids_are_skipped_and_counted(db_url: str, engine: Engine, sim: Simulator,
                                              make_config: Callable[..., Config]) -> None:
    good = list(sim.state.lead_ids())[:5]
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE source_leads (pos INTEGER, lead_id VARCHAR(300))"))
        values = [*good, good[0], None, "", "not-a-guid", "x" * 250,
                  "1; DROP TABLE lsq_tasks", "a&leadId=b", f" {good[1]} "]
        conn.execute(text("INSERT INTO source_leads VALUES (:p, :v)"),
                     [{"p": i, "v": v} for i, v in enumerate(values)])
    cfg = make_config(sim, db_url)
    cfg = Config(lsq=cfg.lsq, database=cfg.database,
                 leads=type(cfg.leads)(query="SELECT lead_id FROM source_leads ORDER BY pos"))
    result = pull(cfg)
    c = result.counts
    assert (c.leads_total, c.leads_ok, c.leads_failed) == (5, 5, 0)
    assert c.leads_skipped == 8  # six malformed, two duplicates (one only after trimming)
    assert result.status == "succeeded"


def test_lead_id_and_limit_options(setup: tuple[Config, Engine, Simulator]) -> None:
    cfg, engine, sim = setup
    ids = list(sim.state.lead_ids())
    result = pull(cfg, lead_ids=[ids[3], ids[4]])
    assert result.counts.leads_total == 2 and result.counts.api_calls == 2
    assert {r.lead_id for r in synced(engine).values()} <= {ids[3], ids[4]}
    result = pull(cfg, limit=7)
    assert result.counts.leads_total == 7 and result.counts.api_calls == 7


def test_query_auth_mode_works_end_to_end(setup: tuple[Config, Engine, Simulator],
                                          make_config: Callable[..., Config], db_url: str
                                          ) -> None:
    _, _engine, sim = setup
    result = pull(make_config(sim, db_url, auth="query"))
    assert result.counts.leads_ok == 40
    assert sim.seen_access_keys == {sim.cfg.access_key}  # the `$` arrived intact


def test_leads_from_another_database(empty_db_url: str, sqlite_url: str, sim: Simulator,
                                     make_config: Callable[..., Config], tmp_path: Any) -> None:
    """Lead ids in one database (any dialect), tasks in a SQLite file elsewhere."""
    from lsq_sync import db, schema
    leads_url = empty_db_url
    if leads_url == sqlite_url:
        leads_url = f"sqlite:///{tmp_path / 'crm.db'}"
    fill_leads_table(leads_url, sim.state.lead_ids())
    tasks_engine = db.make_engine(sqlite_url)
    schema.upgrade(tasks_engine)
    base = make_config(sim, sqlite_url)
    cfg = Config(lsq=base.lsq, database=base.database,
                 leads=type(base.leads)(url=leads_url, query="SELECT lead_id FROM leads"))
    result = pull(cfg)
    assert result.counts.leads_ok == 40
    assert_matches(tasks_engine, sim)
    with tasks_engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM sqlite_master WHERE name = 'leads'")
                            ).scalar_one() == 0  # the ids were only read from the other one
