"""End to end over HTTP: pulls against the simulator on every configured dialect."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import Engine, make_url

from lsq_sync.config import Config
from lsq_sync.core import app
from lsq_sync.core.pull import PullOptions
from lsq_sync.errors import AuthError
from lsq_sync.store.models import sync_runs, tasks
from lsq_sync.testing import Faults, Simulator

from .helpers import assert_matches, fill_leads_table, synced


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


def test_a_lead_whose_last_tasks_vanished_marks_them_deleted(
        setup: tuple[Config, Engine, Simulator]) -> None:
    cfg, engine, sim = setup
    state = sim.state
    # The simulator answers an empty lead without a TaskList at odd indices, with an empty
    # one at even: empty one lead of each kind.
    emptied = [next(lead for i, lead in enumerate(state.lead_ids())
                    if i % 2 == parity and state.tasks_of(lead)) for parity in (0, 1)]
    pull(cfg)
    gone = [t["TaskID"] for lead in emptied for t in state.tasks_of(lead)]
    for task_id in gone:
        state.delete_task(task_id)
    result = pull(cfg)
    assert result.counts.tasks_deleted == len(gone) > 0
    rows = synced(engine, live=False)
    assert all(rows[task_id].deleted_at is not None for task_id in gone)
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


# Each status once with the shared budget (which adopts a stated limit too) and once
# without: the process's own limiter must adopt it alone.
@pytest.mark.parametrize(("status", "shared"), [(403, True), (429, False)])
def test_throttle_statuses(status: int, shared: bool, sqlite_url: str,
                           make_sim: Callable[..., Simulator],
                           make_config: Callable[..., Config]) -> None:
    from lsq_sync.store import db, schema
    engine = db.make_engine(sqlite_url)
    schema.upgrade(engine)
    sim = make_sim(leads=40, rate_calls=10, rate_period_s=1.0, throttle_status=status)
    fill_leads_table(sqlite_url, sim.state.lead_ids())
    result = pull(make_config(sim, sqlite_url, rate_limit_calls=50, rate_limit_period_s=1,
                              shared_budget=shared))
    assert result.counts.leads_ok == 40 and result.counts.throttled > 0
    # The stated limit is obeyed from the first refusal on: what the client sent after it
    # (refused or not) never crowds a window past it.
    arrivals = list(sim.meter.log)
    first = next(i for i, (_, admitted) in enumerate(arrivals) if not admitted)
    after = [t for t, _ in arrivals[first:]]
    assert max(sum(1 for u in after if t <= u < t + 1.0) for t in after) <= 10
    assert_matches(engine, sim)


def test_a_lead_with_an_mx_error_fails_alone_and_changes_nothing(
        setup: tuple[Config, Engine, Simulator]) -> None:
    cfg, engine, sim = setup
    state = sim.state
    # mx_error_every=5 breaks indices 1, 6, 11, ...: give the first of them tasks to keep.
    broken = state.lead_id(1)
    while len(state.tasks_of(broken)) < 2:
        state.move_task(next(t["TaskID"] for lead in state.lead_ids() if lead != broken
                             for t in state.tasks_of(lead)), broken)
    pull(cfg)
    kept = state.tasks_of(broken)
    before = {t["TaskID"]: synced(engine)[t["TaskID"]] for t in kept}
    state.delete_task(kept[0]["TaskID"])
    state.change_task(kept[1]["TaskID"], Name="Changed while unreadable")
    sim.cfg.faults.mx_error_every = 5
    result = pull(cfg)
    assert result.status == "partial"
    assert result.counts.leads_failed == 8 and result.counts.leads_ok == 32
    assert result.counts.api_calls == 40  # logical errors are not retried
    rows = synced(engine, live=False)
    assert len(before) >= 2
    for task_id, old in before.items():  # untouched: not deleted, not changed, not "seen"
        assert rows[task_id]._asdict() == old._asdict()
    with engine.connect() as conn:
        run = conn.execute(select(sync_runs).order_by(sync_runs.c.id.desc())).first()
    assert run is not None and run.status == "partial" and run.leads_failed == 8


def test_a_bad_task_does_not_freeze_its_lead(
        db_url: str, engine: Engine, make_sim: Callable[..., Simulator],
        make_config: Callable[..., Config], tmp_path: Any) -> None:
    sim = make_sim(leads=30, max_tasks=8)
    fill_leads_table(db_url, sim.state.lead_ids())
    cfg = make_config(sim, db_url)
    pull(cfg)
    lead = next(x for x in sim.state.lead_ids() if len(sim.state.tasks_of(x)) >= 4)
    bad, changed, deleted, kept = (t["TaskID"] for t in sim.state.tasks_of(lead)[:4])
    good_row = synced(engine)[bad]
    sim.state.change_task(bad, Reminder={"minutes": "soon"}, Name="Bad now")
    sim.state.change_task(changed, Name="Renamed")
    sim.state.delete_task(deleted)
    sim.state.add_task(lead, {**sim.state.tasks_of(lead)[-1], "TaskID": "new-task-1"})
    result = pull(cfg)
    assert result.status == "partial" and result.counts.tasks_skipped == 1
    assert result.counts.leads_failed == 0
    rows = synced(engine, live=False)
    assert rows[bad].name == good_row.name and rows[bad].deleted_at is None  # last good row
    assert rows[bad].raw_hash == good_row.raw_hash
    assert rows[changed].name == "Renamed" and rows[changed].deleted_at is None
    assert rows[deleted].deleted_at is not None and rows[kept].deleted_at is None
    assert rows["new-task-1"].lead_id == lead
    # runs show names the task and why; the CLI exits 1.
    from click.testing import CliRunner

    from lsq_sync.cli import cli

    from .helpers import write_config
    path = write_config(tmp_path / "c.toml", sim, db_url)
    shown = CliRunner().invoke(cli, ["--config", str(path), "runs", "show",
                                     str(result.run_id)])
    assert f"{bad}: task {bad}: Reminder" in shown.output
    again = CliRunner().invoke(cli, ["--config", str(path), "pull"])
    assert again.exit_code == 1


HOSTILE_REMINDERS = ["99999999999999999999", 2**40, "\u0663", "\u00b2", -(2**31)]


def test_a_reminder_no_column_can_hold_fails_its_task_alone(
        db_url: str, engine: Engine, make_sim: Callable[..., Simulator],
        make_config: Callable[..., Config]) -> None:
    sim = make_sim(leads=12, max_tasks=4)
    fill_leads_table(db_url, sim.state.lead_ids())
    leads = [x for x in sim.state.lead_ids() if len(sim.state.tasks_of(x)) >= 2]
    bad = {}
    for lead, value in zip(leads, HOSTILE_REMINDERS, strict=False):
        task_id = sim.state.tasks_of(lead)[0]["TaskID"]
        sim.state.change_task(task_id, Reminder=value)
        bad[task_id] = value
    assert len(bad) == len(HOSTILE_REMINDERS)
    cfg = make_config(sim, db_url)
    for _ in range(2):  # and the next pull too: nothing is stuck behind them
        result = pull(cfg)
        assert result.status == "partial" and result.counts.tasks_skipped == len(bad)
        assert result.counts.leads_failed == 0
        rows = synced(engine)
        assert not set(bad) & set(rows)
        others = [t for x in sim.state.lead_ids() for t in sim.state.tasks_of(x)
                  if t["TaskID"] not in bad]
        assert {t["TaskID"] for t in others} == set(rows)
        assert all(rows[t["TaskID"]].reminder_minutes == int(t["Reminder"]) for t in others)


def test_long_text_and_nul_characters_fit_every_database(
        db_url: str, engine: Engine, make_sim: Callable[..., Simulator],
        make_config: Callable[..., Config]) -> None:
    sim = make_sim(leads=5)
    fill_leads_table(db_url, sim.state.lead_ids())
    cfg = make_config(sim, db_url)
    lead = next(x for x in sim.state.lead_ids() if sim.state.tasks_of(x))
    task_id = sim.state.tasks_of(lead)[0]["TaskID"]
    long = "x" * 70_000 + "\u00e9"
    sim.state.change_task(task_id, Description=long, Name="with\x00nul", Extra="a\x00b")
    result = pull(cfg)
    assert result.status == "succeeded", result
    row = synced(engine)[task_id]
    assert row.description == long and row.name == "with\ufffdnul"
    assert row.raw["Extra"] == "a\ufffdb"
    # A 70 KB edit is queued and sent whole.
    from lsq_sync.core import merge
    merge.queue(engine, task_id, {"description": long + "!"})
    assert app.push(cfg).counts.edits_sent == 1
    assert sim.state.task(task_id)["Description"] == long + "!"  # type: ignore[index]
    assert synced(engine)[task_id].description == long + "!"


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


def test_limit_means_n_after_a_stopped_pass(setup: tuple[Config, Engine, Simulator],
                                             make_config: Callable[..., Config],
                                             db_url: str) -> None:
    """A pass stopped by the call cap leaves leads to resume; `--limit 5` then fetches 5,
    not what the pass left, and the next pass still resumes the rest."""
    cfg, engine, sim = setup
    stopped = pull(make_config(sim, db_url, max_calls_per_run=6))
    assert stopped.stopped is not None and stopped.counts.leads_ok < 40
    limited = pull(cfg, limit=5)
    assert limited.counts.leads_total == 5 and limited.counts.api_calls == 5
    rest = pull(cfg)
    assert rest.status == "succeeded"
    assert rest.counts.leads_total == 40 - stopped.counts.leads_ok
    assert_matches(engine, sim)


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
    from lsq_sync.store import db, schema
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


# -- the watermark: :last_success is the start of the last complete pass -----------------

INCREMENTAL = ("SELECT lead_id FROM crm_leads "
               "WHERE modified_at >= COALESCE(:last_success, '1970-01-01')")


@pytest.fixture
def crm(db_url: str, engine: Engine, make_sim: Callable[..., Simulator],
        make_config: Callable[..., Config]) -> Any:
    """A leads table with a real modified_at column, read by the README's incremental
    query; `touch(ids)` records a change to those leads now, as a CRM export would."""
    from types import SimpleNamespace

    from sqlalchemy import Column, DateTime, MetaData, String, Table, insert, update

    from lsq_sync.store.types import utcnow
    sim = make_sim(leads=12)
    meta = MetaData()
    from sqlalchemy.dialects import mysql
    table = Table("crm_leads", meta, Column("lead_id", String(64), primary_key=True),
                  Column("modified_at", DateTime().with_variant(mysql.DATETIME(fsp=6),
                                                                "mysql", "mariadb")))
    meta.create_all(engine)
    ids = list(sim.state.lead_ids())
    old = utcnow().replace(tzinfo=None) - timedelta(days=1)
    with engine.begin() as conn:
        conn.execute(insert(table), [{"lead_id": i, "modified_at": old} for i in ids])

    def touch(leads: list[str], ago: timedelta = timedelta(0)) -> None:
        with engine.begin() as conn:
            conn.execute(update(table).where(table.c.lead_id.in_(leads))
                         .values(modified_at=utcnow().replace(tzinfo=None) - ago))

    def config(overlap: float = 0, **lsq: Any) -> Config:
        # No overlap by default: these tests must see the watermark's exact edge.
        base = make_config(sim, db_url, **lsq)
        return Config(lsq=base.lsq, database=base.database, leads=type(base.leads)(
            query=INCREMENTAL, watermark_overlap_s=overlap))

    def rename(leads: list[str], name: str) -> None:
        for lead in leads:
            for task in sim.state.tasks_of(lead):
                sim.state.change_task(task["TaskID"], Name=name)

    return SimpleNamespace(sim=sim, ids=ids, touch=touch, config=config, rename=rename)


def names_of(engine: Engine, leads: list[str]) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(select(tasks.c.name).where(tasks.c.lead_id.in_(leads),
                                                           tasks.c.deleted_at.is_(None)))
                   .scalars())


@pytest.mark.parametrize("by_hand", [["--lead-id"], ["--limit"]])
def test_a_run_by_hand_never_moves_the_watermark(by_hand: list[str], crm: Any,
                                                 engine: Engine) -> None:
    cfg = crm.config()
    assert pull(cfg).counts.leads_total == 12  # the first complete pass
    changed = [x for x in crm.ids[3:6] if crm.sim.state.tasks_of(x)]
    crm.rename(changed, "Changed overnight")
    crm.touch(changed)
    manual = pull(cfg, **({"lead_ids": [crm.ids[0]]} if by_hand == ["--lead-id"]
                          else {"limit": 1}))
    assert manual.status == "succeeded" and manual.counts.leads_total == 1
    result = pull(cfg)  # the next pass still sees the change made before the manual run
    assert result.counts.leads_total == len(changed) > 0
    assert names_of(engine, changed) == {"Changed overnight"}


def test_a_stopped_pass_counts_from_its_first_run(crm: Any, engine: Engine) -> None:
    assert pull(crm.config()).counts.leads_total == 12
    crm.touch(crm.ids)                         # every lead changed: the second pass has 12
    first = pull(crm.config(max_calls_per_run=5))
    assert first.status == "partial" and first.counts.leads_ok == 5  # stopped at the cap
    crm.rename(crm.ids, "Changed during the pause")  # the leads it had done change too
    crm.touch(crm.ids)
    second = pull(crm.config())                # resumes: the 7 left, and completes the pass
    assert second.status == "succeeded" and second.counts.leads_total == 7
    with engine.connect() as conn:
        passes = conn.execute(select(sync_runs.c.id, sync_runs.c.pass_started_at,
                                     sync_runs.c.pass_since, sync_runs.c.started_at)
                              .order_by(sync_runs.c.id)).all()
    # The resumed run belongs to the pass of its first run, and evaluates the query with
    # the same :last_success.
    assert passes[2].pass_started_at == passes[1].pass_started_at == passes[1].started_at
    assert passes[2].pass_since == passes[1].pass_since == passes[0].started_at
    third = pull(crm.config())                 # the changes after the pass began are seen
    assert third.counts.leads_total == 12
    with_tasks = [x for x in crm.ids if crm.sim.state.tasks_of(x)]
    assert names_of(engine, with_tasks) == {"Changed during the pause"}


def test_failed_leads_are_retried_even_when_the_query_drops_them(
        crm: Any, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    from lsq_sync.core import pull as pull_module
    from lsq_sync.store.models import failed_leads
    monkeypatch.setattr(pull_module, "MAX_LEAD_RETRIES", 3)
    crm.sim.cfg.faults.mx_error_every = 12      # lead 1 answers an MX error
    broken = crm.ids[1]

    def failures() -> int | None:
        with engine.connect() as conn:
            value = conn.execute(select(failed_leads.c.failures)
                                 .where(failed_leads.c.lead_id == broken)).scalar()
        return None if value is None else int(value)

    first = pull(crm.config())
    assert first.counts.leads_failed == 1 and failures() == 1
    second = pull(crm.config())                 # the query returns nothing new ...
    assert second.counts.leads_total == 1 and failures() == 2  # ... but the lead is retried
    third = pull(crm.config())
    assert third.counts.leads_total == 1 and failures() == 3
    fourth = pull(crm.config())                 # the bound: no more retries by themselves
    assert fourth.counts.leads_total == 0 and failures() == 3
    crm.sim.cfg.faults.mx_error_every = 0
    crm.touch([broken])                         # the query brings it back: it heals
    healed = pull(crm.config())
    assert healed.counts.leads_ok == 1 and failures() is None
    assert len(names_of(engine, [broken])) > 0 or not crm.sim.state.tasks_of(broken)


def test_the_overlap_catches_a_change_stamped_by_a_slower_clock(crm: Any,
                                                                engine: Engine) -> None:
    assert pull(crm.config(overlap=120)).counts.leads_total == 12
    crm.rename([crm.ids[4]], "Stamped early")
    crm.touch([crm.ids[4]], ago=timedelta(seconds=60))  # its clock is a minute behind ours
    assert pull(crm.config(overlap=0)).counts.leads_total == 0   # an exact edge misses it
    assert pull(crm.config(overlap=120)).counts.leads_total == 1


def test_lead_id_that_is_not_a_guid_is_a_usage_error(tmp_path: Any, sqlite_url: str) -> None:
    from click.testing import CliRunner

    from lsq_sync.cli import cli

    from .helpers import write_config
    path = write_config(tmp_path / "c.toml", None, sqlite_url)
    result = CliRunner().invoke(cli, ["--config", str(path), "pull", "--lead-id",
                                      "00000000-5151-4000-8000-000000000001", "--lead-id",
                                      "not-a-lead"])
    assert result.exit_code == 2
    assert "--lead-id 'not-a-lead' is not a GUID" in result.output


def test_changed_at_moves_only_when_content_changes(setup: tuple[Config, Engine, Simulator]
                                                    ) -> None:
    cfg, engine, sim = setup
    lead = next(x for x in sim.state.lead_ids() if len(sim.state.tasks_of(x)) >= 3)
    renamed, deleted, pushed = (t["TaskID"] for t in sim.state.tasks_of(lead)[:3])
    pull(cfg)
    first = {k: r.changed_at for k, r in synced(engine, live=False).items()}
    assert all(first.values())
    pull(cfg)  # nothing changed
    assert {k: r.changed_at for k, r in synced(engine, live=False).items()} == first
    sim.state.change_task(renamed, Name="Renamed")
    sim.state.delete_task(deleted)
    pull(cfg)
    second = {k: r.changed_at for k, r in synced(engine, live=False).items()}
    assert {k for k in first if second[k] != first[k]} == {renamed, deleted}
    assert second[renamed] > first[renamed]
    from lsq_sync.core import merge
    merge.queue(engine, pushed, {"name": "Pushed"})
    app.push(cfg)
    third = {k: r.changed_at for k, r in synced(engine, live=False).items()}
    assert {k for k in first if third[k] != second[k]} == {pushed}


def test_history_keeps_every_version(setup: tuple[Config, Engine, Simulator],
                                     make_config: Callable[..., Config], db_url: str) -> None:
    from lsq_sync.config import StoreConfig
    from lsq_sync.store.models import task_history
    cfg, engine, sim = setup
    pull(cfg)  # history off: nothing recorded
    with engine.connect() as conn:
        assert conn.execute(select(task_history)).first() is None
    base = make_config(sim, db_url)
    on = Config(lsq=base.lsq, database=base.database, leads=base.leads,
                store=StoreConfig(history=True))
    lead = next(x for x in sim.state.lead_ids() if len(sim.state.tasks_of(x)) >= 3)
    renamed, moved, deleted = (t["TaskID"] for t in sim.state.tasks_of(lead)[:3])
    other = next(x for x in sim.state.lead_ids() if x != lead)
    sim.state.change_task(renamed, Name="Renamed")
    pull(on)
    sim.state.move_task(moved, other)
    sim.state.delete_task(deleted)
    owner = next(o for o in ("2b8f1c5e-4d0c-11ec-993a-06f221480cd8",
                             "1a50c565-8525-11ea-a93b-0aa4c559f4ca")
                 if o != sim.state.task(renamed)["OwnerID"])  # type: ignore[index]
    sim.state.change_task(renamed, OwnerID=owner)
    pull(on)
    pull(on)  # nothing changed: no version
    with engine.connect() as conn:
        versions = conn.execute(select(task_history).order_by(task_history.c.id)).all()
    by_task: dict[str, list[Any]] = {}
    for v in versions:
        by_task.setdefault(v.task_id, []).append(v)
    assert set(by_task) == {renamed, moved, deleted}
    first, second = by_task[renamed]
    assert first.name == "Renamed" and first.valid_to == second.valid_from
    assert second.owner_id == owner
    assert second.valid_to is None and not second.deleted
    (move,) = by_task[moved]
    assert move.lead_id == other and not move.deleted
    (gone,) = by_task[deleted]
    assert gone.deleted and gone.deleted_at is not None and gone.valid_to is None
    # Exactly one current version per task.
    with engine.connect() as conn:
        current = conn.execute(text(
            "SELECT task_id, COUNT(*) FROM lsq_task_history WHERE valid_to IS NULL "
            "GROUP BY task_id HAVING COUNT(*) > 1")).all()
    assert current == []


def refuse_a_name(engine: Engine, name: str) -> None:
    """Make the database itself refuse any task row named `name`."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            for event in ("INSERT", "UPDATE"):
                conn.execute(text(
                    f"CREATE TRIGGER refuse_{event.lower()} BEFORE {event} ON lsq_tasks "
                    f"WHEN NEW.name = '{name}' BEGIN SELECT RAISE(ABORT, 'refused'); END"))
        else:
            conn.execute(text(f"ALTER TABLE lsq_tasks ADD CONSTRAINT refuse_name "
                              f"CHECK (name <> '{name}')"))


def test_a_task_the_database_refuses_fails_alone(
        setup: tuple[Config, Engine, Simulator]) -> None:
    cfg, engine, sim = setup
    pull(cfg)
    lead = next(x for x in sim.state.lead_ids() if len(sim.state.tasks_of(x)) >= 3)
    refused, renamed, deleted = (t["TaskID"] for t in sim.state.tasks_of(lead)[:3])
    before = synced(engine)[refused]
    refuse_a_name(engine, "Refuse me")
    sim.state.change_task(refused, Name="Refuse me")
    sim.state.change_task(renamed, Name="Fine")
    sim.state.delete_task(deleted)
    result = pull(cfg)
    assert result.status == "partial" and result.counts.tasks_skipped == 1
    assert result.counts.leads_failed == 0 and result.counts.leads_ok == 40
    rows = synced(engine, live=False)
    assert rows[refused].name == before.name and rows[refused].deleted_at is None
    assert rows[renamed].name == "Fine" and rows[deleted].deleted_at is not None
    from lsq_sync.store import worklist
    (partial,) = worklist.failed(engine, result.run_id, state="partial")
    assert partial["lead_id"] == lead and "refused by the database" in partial["error"]


def test_the_watermark_holds_whatever_the_session_time_zone(
        db_url: str, make_sim: Callable[..., Simulator],
        make_config: Callable[..., Config]) -> None:
    """A leads table whose times are UTC in a plain timestamp (PostgreSQL) or a TIMESTAMP
    (MySQL), read by sessions whose zone is not UTC: the README's incremental query must
    still see a change made after the last pass began."""
    from sqlalchemy import Column, DateTime, MetaData, String, Table, insert, update
    from sqlalchemy.dialects import mysql

    from lsq_sync.store import db
    from lsq_sync.store.types import utcnow
    backend = make_url(db_url).get_backend_name()
    if backend == "sqlite":
        pytest.skip("SQLite has no session time zone")
    admin = db.make_engine(db_url)
    leads_url = db_url
    if backend == "postgresql":  # every new session of this database: +05:30
        with admin.connect() as conn:
            conn.execute(text(f"ALTER DATABASE {make_url(db_url).database} "
                              f"SET timezone TO 'Asia/Kolkata'"))
            conn.commit()
    else:  # MySQL has no per-database zone: the session's is set as it connects
        leads_url = f"{db_url}?init_command=SET%20time_zone%3D%27-05%3A00%27"
    meta = MetaData()
    table = Table("crm_leads", meta, Column("lead_id", String(64), primary_key=True),
                  Column("modified_at", DateTime().with_variant(mysql.TIMESTAMP(fsp=6),
                                                                "mysql", "mariadb")))
    meta.create_all(admin)
    sim = make_sim(leads=6)
    ids = list(sim.state.lead_ids())
    old = utcnow().replace(tzinfo=None) - timedelta(days=1)
    with admin.begin() as conn:
        conn.execute(insert(table), [{"lead_id": i, "modified_at": old} for i in ids])
    base = make_config(sim, db_url)
    cfg = Config(lsq=base.lsq, database=base.database, leads=type(base.leads)(
        url=leads_url, query=INCREMENTAL, watermark_overlap_s=0))
    assert pull(cfg).counts.leads_total == 6
    assert pull(cfg).counts.leads_total == 0
    with admin.begin() as conn:  # a change now, in UTC, as the table keeps its times
        conn.execute(update(table).where(table.c.lead_id.in_(ids[:2]))
                     .values(modified_at=utcnow().replace(tzinfo=None)))
    assert pull(cfg).counts.leads_total == 2
    probe = db.make_engine(leads_url)  # and lsq-sync's own sessions are in UTC
    with probe.connect() as conn:
        zone = conn.execute(text("SHOW TIME ZONE" if backend == "postgresql"
                                 else "SELECT @@session.time_zone")).scalar_one()
    assert zone in ("UTC", "+00:00")
    probe.dispose()
    admin.dispose()


@pytest.mark.parametrize("leads", [0, 5])
def test_a_signal_stops_a_run_only_when_work_was_left(
        leads: int, sqlite_url: str, make_sim: Callable[..., Simulator],
        make_config: Callable[..., Config]) -> None:
    from lsq_sync.control import Stop, StopReason
    from lsq_sync.store import db, schema
    engine = db.make_engine(sqlite_url)
    schema.upgrade(engine)
    sim = make_sim(leads=leads)
    fill_leads_table(sqlite_url, sim.state.lead_ids())
    stop = Stop()
    stop.set(StopReason.SIGNAL)  # SIGTERM as the run starts
    result = app.pull(make_config(sim, sqlite_url), PullOptions(), app.Context(stop=stop))
    with engine.connect() as conn:
        complete = conn.execute(select(sync_runs.c.pass_complete)).scalar_one()
    if leads:  # nothing was staged: the pass is not complete, :last_success stays
        assert result.by_signal and result.status == "partial" and not complete
    else:  # nothing to do: nothing was stopped, and the CLI exits 0
        assert not result.by_signal and result.status == "succeeded" and complete


def test_full_refresh_passes_over_every_lead_with_no_watermark(crm: Any, engine: Engine
                                                               ) -> None:
    cfg = crm.config()
    assert pull(cfg).counts.leads_total == 12
    assert pull(cfg).counts.leads_total == 0  # incremental: nothing changed since
    full = pull(cfg, full=True)
    assert full.counts.leads_total == 12 and full.status == "succeeded"
    with engine.connect() as conn:
        row = conn.execute(select(sync_runs).where(sync_runs.c.id == full.run_id)).one()
    assert row.pass_since is None and row.pass_complete
    assert pull(cfg).counts.leads_total == 0  # and the next pass counts from it


def test_a_run_by_hand_does_not_count_as_a_fresh_pull(crm: Any, engine: Engine) -> None:
    from lsq_sync.store import health
    cfg = crm.config()
    passed = pull(cfg)
    by_hand = pull(cfg, lead_ids=[crm.ids[0]])
    assert by_hand.status == "succeeded"
    with engine.connect() as conn:
        finished = {r.id: r.finished_at for r in conn.execute(select(sync_runs))}
    report = health.report(engine)
    assert report["last_pull_success_at"] == finished[passed.run_id]
    assert report["commands"]["pull"]["last_run"]["id"] == by_hand.run_id  # shown


def test_a_stopped_run_counts_only_the_calls_it_made(
        sqlite_url: str, make_sim: Callable[..., Simulator],
        make_config: Callable[..., Config]) -> None:
    """Workers waiting for a slot when the stop comes never call: their calls are not
    counted (the count feeds the metrics and max_calls_per_day)."""
    import threading
    import time

    from lsq_sync.control import Stop, StopReason
    from lsq_sync.store import db, schema
    schema.upgrade(db.make_engine(sqlite_url))
    sim = make_sim(leads=40, rate_calls=5, rate_period_s=1.0)
    fill_leads_table(sqlite_url, sim.state.lead_ids())
    cfg = make_config(sim, sqlite_url, rate_limit_calls=5, rate_limit_period_s=1,
                      concurrency=10)
    stop = Stop()
    results: list[Any] = []
    runner = threading.Thread(target=lambda: results.append(
        app.pull(cfg, PullOptions(), app.Context(stop=stop))))
    runner.start()
    deadline = time.monotonic() + 30
    while sim.meter.snapshot()["received"] < 7 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set(StopReason.SIGNAL)  # nine workers are waiting for a slot now
    runner.join(timeout=60)
    (result,) = results
    assert result.by_signal
    assert result.counts.api_calls == sim.meter.snapshot()["received"] < 40


def test_the_cap_counts_calls_that_go_not_calls_that_wait(
        sqlite_url: str, make_sim: Callable[..., Simulator],
        make_config: Callable[..., Config]) -> None:
    """Ten workers, five slots a second, --calls 8: the run makes eight calls, however
    many workers were waiting for a slot when the eighth went."""
    from lsq_sync.store import db, schema
    schema.upgrade(db.make_engine(sqlite_url))
    sim = make_sim(leads=40, rate_calls=5, rate_period_s=1.0)
    fill_leads_table(sqlite_url, sim.state.lead_ids())
    result = pull(make_config(sim, sqlite_url, rate_limit_calls=5, rate_limit_period_s=1,
                              concurrency=10), calls=8)
    assert result.counts.api_calls == 8 == sim.meter.snapshot()["received"]
    # A throttled call (arrival jitter) is a call made: its lead waits for the next pull.
    assert result.counts.leads_ok == 8 - result.counts.throttled
    assert "call cap" in (result.stopped or "")


def test_calls_caps_one_run_and_the_next_pull_goes_on(crm: Any, engine: Engine) -> None:
    first = pull(crm.config(), calls=5)
    assert first.counts.api_calls == 5 and first.status == "partial" and not first.failed
    assert "call cap" in (first.stopped or "")
    smaller = pull(crm.config(max_calls_per_run=2), calls=5)  # the config's lower cap binds
    assert smaller.counts.api_calls == 2
    rest = pull(crm.config())
    assert rest.status == "succeeded" and rest.counts.leads_ok == 12 - 5 - 2
