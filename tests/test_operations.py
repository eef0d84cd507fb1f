"""Cron and backfill operations with real processes: locks, kills, signals, resume, caps."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select, text
from sqlalchemy.engine import Engine

from lsq_sync.cli import cli
from lsq_sync.config import Config
from lsq_sync.core import app
from lsq_sync.core.pull import PullOptions
from lsq_sync.store import db, runs, schema
from lsq_sync.store import leases as lock
from lsq_sync.store.models import locks, sync_runs
from lsq_sync.store.types import utcnow
from lsq_sync.testing import Faults, Meter, Simulator

from .helpers import assert_matches, fill_leads_table, last_words, write_config


def spawn(config: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "lsq_sync", "--config", str(config), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "LSQ_ACCESS_KEY": "", "LSQ_SECRET_KEY": ""})


def wait_for(check: Callable[[], bool], what: str, limit_s: float = 60) -> None:
    """Poll until `check` holds (a bound on waiting, not a timing assertion)."""
    deadline = time.monotonic() + limit_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def run_row(engine: Engine, run_id: int | None = None) -> Any:
    query = select(sync_runs).order_by(sync_runs.c.id.desc())
    if run_id is not None:
        query = select(sync_runs).where(sync_runs.c.id == run_id)
    with engine.connect() as conn:
        return conn.execute(query).first()


def leads_done(engine: Engine) -> int:
    row = run_row(engine)
    return 0 if row is None else int(row.leads_ok)


@pytest.fixture
def slow(sqlite_url: str, make_sim: Callable[..., Simulator],
         tmp_path: Path) -> Iterator[tuple[Path, Engine, Simulator]]:
    """60 leads behind a limit of 10 calls per second: a pull takes about 6 s. On SQLite
    alone: these tests are about processes (locks, kill -9, SIGTERM, resuming); what they
    rely on in each dialect (locks, run lists, claims) is tested on all three elsewhere."""
    from lsq_sync.store import schema
    engine = db.make_engine(sqlite_url)
    schema.upgrade(engine)
    sim = make_sim(leads=60, rate_calls=10, rate_period_s=1.0)
    fill_leads_table(sqlite_url, sim.state.lead_ids())
    config = write_config(tmp_path / "c.toml", sim, sqlite_url, rate_limit_calls=10,
                          rate_limit_period_s=1, concurrency=2)
    yield config, engine, sim
    engine.dispose()


@pytest.mark.slow
def test_a_second_pull_exits_75_naming_the_first(slow: tuple[Path, Engine, Simulator]) -> None:
    config, engine, _ = slow
    first = spawn(config, "pull")
    try:
        wait_for(lambda: leads_done(engine) > 0, "the first pull to get going")
        second = spawn(config, "pull")
        out, _ = second.communicate(timeout=60)
        assert second.returncode == 75, out
        line = last_words(out)
        assert len(line) == 1 and "another pull is running: run 1" in line[0]
        assert f"pid {first.pid} on {lock.HOST}" in line[0] and "UTC" in line[0]
    finally:
        first.communicate(timeout=60)
    assert first.returncode == 0
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM lsq_sync_runs")).scalar_one() == 1


@pytest.mark.slow
def test_kill_9_then_the_next_pull_does_only_the_rest(
        slow: tuple[Path, Engine, Simulator]) -> None:
    config, engine, sim = slow
    victim = spawn(config, "pull")
    wait_for(lambda: leads_done(engine) >= 15, "some leads to be written")
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=30)
    done_before = leads_done(engine)
    assert 15 <= done_before < 60

    after = spawn(config, "pull")
    out, _ = after.communicate(timeout=60)
    assert after.returncode == 0, out
    killed, resumed = run_row(engine, 1), run_row(engine, 2)
    assert killed.status == "failed" and killed.error.startswith("abandoned: pid")
    assert resumed.status == "succeeded"
    assert resumed.leads_total == 60 - done_before  # only the rest...
    assert resumed.api_calls <= 60 - done_before + 4  # ... (+ requests the kill cut short)
    assert '"resuming"' in out
    assert_matches(engine, sim)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM lsq_run_leads")).scalar_one() == 0
        assert conn.execute(text("SELECT COUNT(*) FROM lsq_locks")).scalar_one() == 0


@pytest.mark.slow
def test_sigterm_stops_cleanly_as_partial_and_the_next_pull_resumes(
        slow: tuple[Path, Engine, Simulator]) -> None:
    config, engine, sim = slow
    proc = spawn(config, "pull")
    wait_for(lambda: leads_done(engine) >= 10, "some leads to be written")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=15)  # the grace period is 5 s
    assert proc.returncode == 1, out
    row = run_row(engine, 1)
    assert row.status == "partial" and "stopped by a signal" in row.error
    assert row.finished_at is not None and "Traceback" not in out
    done = row.leads_ok
    assert done < 60
    again = spawn(config, "pull")
    out, _ = again.communicate(timeout=60)
    assert again.returncode == 0, out
    assert run_row(engine, 2).leads_total == 60 - done
    assert_matches(engine, sim)


@pytest.mark.slow
def test_restart_ignores_what_was_left(slow: tuple[Path, Engine, Simulator]) -> None:
    config, engine, _ = slow
    proc = spawn(config, "pull")
    wait_for(lambda: leads_done(engine) >= 5, "some leads to be written")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=15)
    fresh = spawn(config, "pull", "--restart")
    out, _ = fresh.communicate(timeout=60)
    assert fresh.returncode == 0, out
    assert run_row(engine, 2).leads_total == 60


@pytest.mark.slow
def test_pull_and_push_together_share_the_limit(
        db_url: str, engine: Engine, make_sim: Callable[..., Simulator],
        make_config: Callable[..., Config], tmp_path: Path) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("two processes over real HTTP: SQLite shows the shared budget across "
                    "processes; test_budget covers its SQL on every dialect")
    sim = make_sim(leads=30, rate_calls=10, rate_period_s=1.0,
                   faults=Faults(latency_ms=(10, 40)))
    fill_leads_table(db_url, sim.state.lead_ids())
    app.pull(make_config(sim, db_url, rate_limit_calls=10, rate_limit_period_s=1),
             PullOptions())
    owned = [(t["TaskID"], lead) for lead in sim.state.lead_ids()
             for t in sim.state.tasks_of(lead)][:24]
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO lsq_task_edits (task_id, name) VALUES (:t, :n)"),
                     [{"t": t, "n": f"Shared {i}"} for i, (t, _) in enumerate(owned)])
    reads = len({lead for _, lead in owned})  # the push reads each lead before its Updates
    # From here the simulator refuses nothing and records every arrival: the busiest
    # window is then what the two processes sent, not what a limit let through.
    # Its window is 0.7 s, not 1 s: lsq-sync spaces the sends it stamps by 1.04 s per ten,
    # and a loaded machine (CI runs four test workers on two cores) may deliver one over
    # 0.3 s later than its stamp without that being an excess. Two processes that did not
    # share the budget would send 20 a second: 11 arrivals within 0.7 s are that.
    sim.meter = Meter(10, 0.7, enforce=False)
    config = write_config(tmp_path / "c.toml", sim, db_url, rate_limit_calls=10,
                          rate_limit_period_s=1, concurrency=3)
    procs = [spawn(config, "pull"), spawn(config, "push")]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    stats = sim.meter.snapshot()
    with engine.connect() as conn:
        recorded = conn.execute(text("SELECT SUM(api_calls) FROM lsq_sync_runs "
                                     "WHERE id > 1")).scalar_one()
    # 30 leads + 24 edits + a read of each lead; with the budget saturated, a task whose
    # lead's read has aged is read again right before its Update (at most once per edit).
    assert stats["accepted"] == recorded  # every call counted, none retried
    assert 54 + reads <= stats["accepted"] <= 54 + reads + 24
    assert stats["busiest_window"] <= 10  # the two processes never exceeded the limit
    # How close they came to it (the pace) is a timing figure: bench/shared_budget.py
    # measures it.


def test_a_pull_with_nothing_to_do_loads_no_http_push_or_migration_code(
        sqlite_url: str, sim: Simulator, tmp_path: Path) -> None:
    """cron every minute pays a run's fixed cost: with no lead to fetch, the HTTP client,
    the push and alembic are never imported, and the run is still recorded."""
    fill_leads_table(sqlite_url, [])
    schema.upgrade(db.make_engine(sqlite_url))
    config = write_config(tmp_path / "c.toml", sim, sqlite_url)
    code = ("import sys; from lsq_sync.cli import main\n"
            "try:\n    sys.argv = ['lsq-sync', '--config', sys.argv[1], 'pull']; main()\n"
            "except SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
            "print(sorted(m for m in ('httpx', 'alembic', 'lsq_sync.core.push',"
            " 'lsq_sync.leadsquared.client') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code, str(config)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    engine = db.make_engine(sqlite_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM lsq_sync_runs")).scalars().all() == [
            "succeeded"]
    engine.dispose()
    assert sim.meter.snapshot()["accepted"] == 0


def test_last_success_selects_only_changed_leads(db_url: str, engine: Engine, sim: Simulator,
                                                 make_config: Callable[..., Config]) -> None:
    from sqlalchemy import Column, DateTime, MetaData, String, Table, insert, update
    meta = MetaData()
    crm = Table("crm_leads", meta, Column("lead_id", String(64), primary_key=True),
                Column("modified_at", DateTime))
    meta.create_all(engine)
    old = utcnow().replace(tzinfo=None) - __import__("datetime").timedelta(days=1)
    ids = list(sim.state.lead_ids())
    with engine.begin() as conn:
        conn.execute(insert(crm), [{"lead_id": i, "modified_at": old} for i in ids])
    base = make_config(sim, db_url)
    cfg = Config(lsq=base.lsq, database=base.database, leads=type(base.leads)(
        query="SELECT lead_id FROM crm_leads "
              "WHERE modified_at >= COALESCE(:last_success, '1970-01-01')"))
    assert app.pull(cfg, PullOptions()).counts.leads_total == 40
    assert app.pull(cfg, PullOptions()).counts.leads_total == 0
    later = utcnow().replace(tzinfo=None) + __import__("datetime").timedelta(minutes=5)
    with engine.begin() as conn:
        conn.execute(update(crm).where(crm.c.lead_id.in_(ids[:3])).values(modified_at=later))
    result = app.pull(cfg, PullOptions())
    assert result.counts.leads_total == 3 and result.counts.api_calls == 3


def test_max_calls_per_run_stops_cleanly_and_resumes(
        db_url: str, engine: Engine, sim: Simulator,
        make_config: Callable[..., Config]) -> None:
    fill_leads_table(db_url, sim.state.lead_ids())
    cfg = make_config(sim, db_url, max_calls_per_run=15, concurrency=3)
    totals = []
    for _ in range(3):
        result = app.pull(cfg, PullOptions())
        totals.append((result.counts.leads_total, result.counts.api_calls,
                       result.counts.leads_ok, result.status))
    assert totals == [(40, 15, 15, "partial"), (25, 15, 15, "partial"),
                      (10, 10, 10, "succeeded")]
    assert "call cap" in run_row(engine, 1).error
    # Only the run that reached the end of the pass completes it (the watermark's rule).
    assert [bool(run_row(engine, i).pass_complete) for i in (1, 2, 3)] == [False, False, True]
    assert_matches(engine, sim)


def test_max_calls_per_day_counts_every_run_of_the_day(
        db_url: str, engine: Engine, sim: Simulator,
        make_config: Callable[..., Config]) -> None:
    fill_leads_table(db_url, sim.state.lead_ids())
    cfg = make_config(sim, db_url, max_calls_per_day=25)
    assert app.pull(cfg, PullOptions()).counts.api_calls == 25
    second = app.pull(cfg, PullOptions())
    assert second.counts.api_calls == 0 and second.status == "partial"
    assert "max_calls_per_day) is used up until UTC midnight" in (second.stopped or "")
    bound = app.pull(replace(cfg, lsq=replace(cfg.lsq, max_calls_per_day=40,
                                              max_calls_per_run=10)), PullOptions())
    assert bound.counts.api_calls == 10 and "the run's call cap" in (bound.stopped or "")


def test_a_lock_of_a_dead_process_is_taken_over(engine: Engine) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=30)
    now = utcnow()
    ghost = runs.start(engine, "pull")
    with engine.begin() as conn:
        conn.execute(sync_runs.update().where(sync_runs.c.id == ghost).values(pid=dead.pid))
        conn.execute(locks.insert().values(name="pull", run_id=ghost, pid=dead.pid,
                                           host=lock.HOST, acquired_at=now,
                                           expires_at=now + lock.LEASE))
    mine = runs.start(engine, "pull")
    assert lock.reap(engine) == [ghost]
    lock.acquire(engine, "pull", mine)  # no LockedError
    assert run_row(engine, ghost).status == "failed"


def cli_run(config: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--config", str(config), *args],
                              env={"LSQ_ACCESS_KEY": "", "LSQ_SECRET_KEY": ""})


def test_doctor(db_url: str, sim: Simulator, make_sim: Callable[..., Simulator],
                tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", sim, db_url)
    fill_leads_table(db_url, sim.state.lead_ids())
    good = cli_run(config, "doctor")
    assert good.exit_code == 0, good.output
    assert [ln.split()[1] for ln in good.output.splitlines()] == [
        "config", "database", "schema", "leads", "credentials", "api", "listen"]
    assert "40 rows, 40 usable lead ids" in good.output

    elsewhere = make_sim(account_host="https://api-in21.leadsquared.com")
    wrong_host = cli_run(write_config(tmp_path / "h.toml", elsewhere, db_url), "doctor")
    assert wrong_host.exit_code == 3
    assert f'FAIL  api host     [lsq].base_url names 127.0.0.1:{httpx_port(elsewhere.url)}, ' \
           'but the account\'s API host is api-in21.leadsquared.com: set base_url = ' \
           '"https://api-in21.leadsquared.com"' in wrong_host.output

    bad_keys = cli_run(write_config(tmp_path / "k.toml", sim, db_url, secret_key="nope"),
                       "doctor")
    assert bad_keys.exit_code == 3
    assert "FAIL  credentials  the API rejected the credentials" in bad_keys.output
    assert "nope" not in bad_keys.output


def test_doctor_keeps_the_port_and_the_scheme_of_the_api_host(
        sqlite_url: str, make_sim: Callable[..., Simulator], tmp_path: Path) -> None:
    sim = make_sim()
    port = httpx_port(sim.url)
    sim.cfg.account_host = f"127.0.0.1:{port}"  # no scheme: the configured one
    config = write_config(tmp_path / "c.toml", sim, sqlite_url)
    fill_leads_table(sqlite_url, sim.state.lead_ids())
    cli_run(config, "db", "upgrade")
    same = cli_run(config, "doctor")
    assert same.exit_code == 0, same.output
    assert f"ok    api host     127.0.0.1:{port} is the account's own host" in same.output
    sim.cfg.account_host = "http://127.0.0.1:1"
    other = cli_run(config, "doctor")
    assert other.exit_code == 3
    assert (f"[lsq].base_url names 127.0.0.1:{port}, but the account's API host is "
            f"127.0.0.1:1: set base_url = \"http://127.0.0.1:1\"") in other.output


def httpx_port(url: str) -> int:
    from urllib.parse import urlsplit
    port = urlsplit(url).port
    assert port is not None
    return port


def test_doctor_on_a_fresh_database(sim: Simulator, tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", sim, f"sqlite:///{tmp_path / 'new.db'}")
    result = cli_run(config, "doctor")
    assert result.exit_code == 3
    assert "FAIL  schema" in result.output and "lsq-sync db upgrade" in result.output
    assert "FAIL  leads query" in result.output


def test_runs_json_and_show(db_url: str, sim: Simulator, tmp_path: Path,
                            make_config: Callable[..., Config]) -> None:
    fill_leads_table(db_url, sim.state.lead_ids())
    sim.cfg.faults.mx_error_every = 20
    app.pull(make_config(sim, db_url), PullOptions())
    config = write_config(tmp_path / "c.toml", sim, db_url)
    listed = cli_run(config, "runs", "--json")
    assert listed.exit_code == 0
    (row,) = [json.loads(line) for line in listed.output.splitlines()]
    assert row["id"] == 1 and row["status"] == "partial" and row["leads_failed"] == 2
    assert row["started_at"].endswith("+00:00")
    shown = cli_run(config, "runs", "show", "1")
    assert shown.exit_code == 0 and "failed leads (2):" in shown.output
    assert "MXInvalidLeadException" in shown.output
    as_json = json.loads(cli_run(config, "runs", "show", "1", "--json").output)
    assert len(as_json["failed_leads"]) == 2
    missing = cli_run(config, "runs", "show", "99")
    assert missing.exit_code == 2 and "there is no run 99" in missing.output


@pytest.mark.slow
def test_sigterm_between_two_halves_of_a_pass_loses_no_change(
        slow: tuple[Path, Engine, Simulator]) -> None:
    """A pass stopped by SIGTERM; a lead it had done changes; the resumed run completes the
    pass; the next pass still pulls the change (the watermark is the pass's first start)."""
    from sqlalchemy import Column, DateTime, MetaData, String, Table, insert, update
    config, engine, sim = slow
    meta = MetaData()
    crm = Table("crm_leads", meta, Column("lead_id", String(64), primary_key=True),
                Column("modified_at", DateTime))
    meta.create_all(engine)
    ids = list(sim.state.lead_ids())
    with engine.begin() as conn:
        conn.execute(insert(crm), [{"lead_id": i, "modified_at": utcnow().replace(tzinfo=None)}
                                   for i in ids])
    config.write_text(config.read_text() + "[leads]\nwatermark_overlap_s = 0\nquery = \""
                      "SELECT lead_id FROM crm_leads WHERE modified_at >= "
                      "COALESCE(:last_success, '1970-01-01')\"\n")
    first = spawn(config, "pull")
    wait_for(lambda: leads_done(engine) >= 10, "some leads to be written")
    first.send_signal(signal.SIGTERM)
    out, _ = first.communicate(timeout=30)
    assert first.returncode == 1, out
    with engine.connect() as conn:
        done = list(conn.execute(text(
            "SELECT DISTINCT lead_id FROM lsq_tasks")).scalars())
    assert done
    for lead in done:                      # leads the stopped run had done change now
        for task in sim.state.tasks_of(lead):
            sim.state.change_task(task["TaskID"], Name="Changed overnight")
    with engine.begin() as conn:
        conn.execute(update(crm).where(crm.c.lead_id.in_(done))
                     .values(modified_at=utcnow().replace(tzinfo=None)))
    resumed = spawn(config, "pull")        # does what the first left: the pass completes
    out, _ = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, out
    assert run_row(engine).pass_complete
    after = spawn(config, "pull")          # the next pass sees the overnight change
    out, _ = after.communicate(timeout=60)
    assert after.returncode == 0, out
    assert run_row(engine).leads_total >= len(done)
    from lsq_sync.store.models import tasks
    with engine.connect() as conn:
        names = set(conn.execute(select(tasks.c.name).where(tasks.c.lead_id.in_(done)))
                    .scalars())
    assert names == {"Changed overnight"}


def closed_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed when the block ends: nothing answers


def test_a_host_where_nothing_answers_stops_the_run_at_once(
        db_url: str, engine: Engine, sim: Simulator, tmp_path: Path) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("a process-level test; the host is the same on every database")
    fill_leads_table(db_url, sim.state.lead_ids())
    config = write_config(tmp_path / "c.toml", sim, db_url, retry_backoff_s=0.05,
                          base_url=f"http://127.0.0.1:{closed_port()}")
    proc = spawn(config, "pull")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 3, out
    (line,) = last_words(out)
    assert "cannot reach [lsq].base_url (127.0.0.1" in line and "ConnectError" in line
    events = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
    retries = [e for e in events if e["event"] == "retry"]
    assert len(retries) == 2  # three connections in a row, one lead at a time
    assert not any(e["event"] == "lead_failed" for e in events)
    with engine.connect() as conn:
        states = conn.execute(text("SELECT state, COUNT(*) FROM lsq_run_leads "
                                   "GROUP BY state")).all()
        failing = conn.execute(text("SELECT COUNT(*) FROM lsq_failed_leads")).scalar_one()
    assert states == [("todo", 40)] and failing == 0  # left to the next run, not failed
    doctor = spawn(config, "doctor")
    out, _ = doctor.communicate(timeout=30)
    assert doctor.returncode == 3 and "FAIL  credentials" in out and "ConnectError" in out
    resumed = spawn(write_config(tmp_path / "ok.toml", sim, db_url), "pull")
    out, _ = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, out
    assert run_row(engine).leads_total == 40 and "resuming" in out


@pytest.mark.parametrize("command", ["pull", "push"])
def test_a_rejected_key_costs_one_call(command: str, db_url: str, engine: Engine,
                                       sim: Simulator, tmp_path: Path) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("a process-level test; the key is the same on every database")
    fill_leads_table(db_url, sim.state.lead_ids())
    good = write_config(tmp_path / "c.toml", sim, db_url, concurrency=8)
    if command == "push":
        assert spawn(good, "pull").communicate(timeout=60) is not None
        leads = list(sim.state.lead_ids())
        tasks_ = [t["TaskID"] for lead in leads for t in sim.state.tasks_of(lead)][:20]
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO lsq_task_edits (task_id, name) VALUES (:t, 'x')"),
                         [{"t": t} for t in tasks_])
    before = sim.meter.snapshot()["received"]
    bad = write_config(tmp_path / "bad.toml", sim, db_url, concurrency=8,
                       secret_key="not-the-secret")
    proc = spawn(bad, command)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 3 and "HTTP 401" in out
    assert sim.meter.snapshot()["received"] - before == 1


def read_lines(proc: subprocess.Popen[str]) -> list[str]:
    """The process's output lines as they come (a thread reads them)."""
    import threading
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    return lines


def test_a_second_signal_stops_at_once(sqlite_url: str, make_sim: Callable[..., Simulator],
                                       tmp_path: Path) -> None:
    from lsq_sync.store import db, schema
    engine = db.make_engine(sqlite_url)
    schema.upgrade(engine)
    # Every answer takes 20 s: the first signal's grace (5 s) would abandon the request
    # in flight and end the run as a clean stop; the second signal must not wait for it.
    sim = make_sim(leads=10, faults=Faults(slow=1.0, slow_s=20))
    fill_leads_table(sqlite_url, sim.state.lead_ids())
    config = write_config(tmp_path / "c.toml", sim, sqlite_url, timeout_s=60)
    proc = spawn(config, "pull")
    lines = read_lines(proc)
    wait_for(lambda: sim.meter.snapshot()["received"] >= 1, "the first request")
    proc.send_signal(signal.SIGTERM)
    wait_for(lambda: any('"stop_requested"' in ln for ln in lines), "the first signal")
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    out = "".join(lines)
    assert proc.returncode == 1, out
    assert "interrupted" in last_words(out)[-1] and '"abandoned_in_flight"' not in out
    assert "Traceback" not in out
    row = run_row(engine)
    assert row.status == "failed" and row.error.startswith("interrupted")
    sim.cfg.faults.slow = 0.0
    again = spawn(config, "pull")
    out, _ = again.communicate(timeout=60)
    assert again.returncode == 0, out
    assert run_row(engine).leads_ok == 10


def test_the_grace_abandons_requests_in_flight_for_the_next_pull(
        sqlite_url: str, make_sim: Callable[..., Simulator],
        make_config: Callable[..., Config]) -> None:
    import threading

    from lsq_sync.store import db, schema
    engine = db.make_engine(sqlite_url)
    schema.upgrade(engine)
    sim = make_sim(leads=10, faults=Faults(slow=1.0, slow_s=3))
    fill_leads_table(sqlite_url, sim.state.lead_ids())
    cfg = make_config(sim, sqlite_url, timeout_s=30)
    ctx = app.Context()

    def stop_when_asked() -> None:
        wait_for(lambda: sim.meter.snapshot()["received"] >= 1, "the first request")
        ctx.stop.set()

    threading.Thread(target=stop_when_asked, daemon=True).start()
    result = app.pull(cfg, PullOptions(grace_s=0.2), ctx)
    # The answer would have come (3 s, inside the timeout): the run did not wait for it.
    assert result.counts.leads_ok == 0 and result.counts.leads_failed == 0
    assert result.status == "partial" and result.by_signal
    sim.cfg.faults.slow = 0.0
    again = app.pull(cfg, PullOptions())
    assert again.counts.leads_total == 10 and again.counts.leads_ok == 10
    assert_matches(engine, sim)


def test_a_lock_from_another_host_is_taken_over_only_after_its_lease(engine: Engine) -> None:
    from datetime import timedelta

    from lsq_sync.errors import LockedError
    now = utcnow()
    ghost = runs.start(engine, "pull")
    with engine.begin() as conn:
        # Its pid may well be alive or dead here: on another host that says nothing.
        conn.execute(sync_runs.update().where(sync_runs.c.id == ghost).values(
            host="another-host", pid=999_999_999, heartbeat_at=now))
        conn.execute(locks.insert().values(name="pull", run_id=ghost, pid=999_999_999,
                                           host="another-host", acquired_at=now,
                                           expires_at=now + lock.LEASE))
    mine = runs.start(engine, "pull")
    assert lock.reap(engine) == []
    with pytest.raises(LockedError, match="on another-host"):
        lock.acquire(engine, "pull", mine)
    lapsed = now - timedelta(seconds=1)
    with engine.begin() as conn:
        conn.execute(locks.update().where(locks.c.run_id == ghost)
                     .values(expires_at=lapsed))
        conn.execute(sync_runs.update().where(sync_runs.c.id == ghost)
                     .values(heartbeat_at=lapsed - lock.LEASE))
    assert lock.reap(engine) == [ghost]
    lock.acquire(engine, "pull", mine)
    assert run_row(engine, ghost).status == "failed"


def test_the_heartbeat_renews_the_lease_while_the_run_lasts(engine: Engine) -> None:
    import structlog
    run_id = runs.start(engine, "pull")
    lock.acquire(engine, "pull", run_id)
    with engine.connect() as conn:
        first = conn.execute(select(locks.c.expires_at)).scalar_one()
    started = run_row(engine, run_id).heartbeat_at  # set by runs.start
    beat = lock.Heartbeat(engine, run_id, structlog.get_logger(), every_s=0.05).start()
    try:
        def renewed() -> bool:  # both the lock's lease and the run's heartbeat move on
            with engine.connect() as conn:
                return bool(conn.execute(select(locks.c.expires_at)).scalar_one() > first
                            and run_row(engine, run_id).heartbeat_at > started)
        wait_for(renewed, "a heartbeat", limit_s=30)
    finally:
        beat.stop()


def test_sync_holds_both_locks(db_url: str, engine: Engine, sim: Simulator,
                               make_config: Callable[..., Config],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    from lsq_sync.core.push import Pusher
    from lsq_sync.errors import LockedError
    fill_leads_table(db_url, sim.state.lead_ids())
    cfg = make_config(sim, db_url)
    held: list[set[str]] = []
    real = Pusher.push

    def spy(self: Pusher, run: Any) -> None:
        with engine.connect() as conn:
            held.append(set(conn.execute(select(locks.c.name)).scalars()))
        real(self, run)

    monkeypatch.setattr(Pusher, "push", spy)
    assert app.sync(cfg, PullOptions()).status == "succeeded"
    assert held == [{"pull", "push"}]
    with engine.connect() as conn:
        assert conn.execute(select(locks.c.name)).first() is None  # released
    for name in ("pull", "push"):  # either one held elsewhere turns a sync away
        other = runs.start(engine, name)
        lock.acquire(engine, name, other)
        with pytest.raises(LockedError, match=f"another {name} is running"):
            app.sync(cfg, PullOptions())
        lock.release(engine, other)


@pytest.mark.parametrize("shared", [True, False])
def test_shared_budget_off_keeps_the_budget_in_the_process(
        shared: bool, sqlite_url: str, sim: Simulator,
        make_config: Callable[..., Config]) -> None:
    from lsq_sync.store import db, schema
    engine = db.make_engine(sqlite_url)
    schema.upgrade(engine)
    fill_leads_table(sqlite_url, sim.state.lead_ids())
    result = app.pull(make_config(sim, sqlite_url, shared_budget=shared), PullOptions())
    assert result.counts.leads_ok == 40
    with engine.connect() as conn:
        slots = conn.execute(text("SELECT COUNT(*) FROM lsq_rate_slots")).scalar_one()
    assert slots == (result.counts.api_calls if shared else 0)


def test_results_are_written_in_batches_of_200_leads_or_2_seconds(
        sqlite_url: str, make_sim: Callable[..., Simulator],
        make_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch) -> None:
    from lsq_sync.core import pull
    from lsq_sync.store import db, schema
    engine = db.make_engine(sqlite_url)
    schema.upgrade(engine)
    sizes: list[int] = []
    real = pull.write_batch

    def spy(conn: Any, outcomes: Any, **kwargs: Any) -> Any:
        outcomes = list(outcomes)
        sizes.append(len(outcomes))
        return real(conn, outcomes, **kwargs)

    monkeypatch.setattr(pull, "write_batch", spy)
    fast = make_sim(leads=450)
    fill_leads_table(sqlite_url, fast.state.lead_ids())
    assert app.pull(make_config(fast, sqlite_url), PullOptions()).counts.leads_ok == 450
    assert PullOptions().batch_size == 200 and PullOptions().flush_s == 2.0
    assert max(sizes) <= 200 and sum(sizes) == 450 and len(sizes) >= 3
    # A trickle of leads is written as time passes, not held until 200 have come.
    sizes.clear()
    slow = make_sim(leads=6, faults=Faults(latency_ms=(30, 60)))
    cfg = make_config(slow, sqlite_url, concurrency=1)
    result = app.pull(cfg, PullOptions(lead_ids=slow.state.lead_ids(), flush_s=0.01))
    assert result.counts.leads_ok == 6 and len(sizes) > 1


def test_the_metrics_file_is_replaced_whole_or_not_at_all(
        sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """node_exporter may read the file at any moment: a write that fails half-way must
    leave the last complete file, not half of a new one."""
    import os

    from lsq_sync.store import db, health, schema
    engine = db.make_engine(sqlite_url)
    schema.upgrade(engine)
    target = tmp_path / "lsq_sync.prom"
    health.write_textfile(str(target), health.report(engine))
    before = target.read_text()
    assert "lsq_sync_edits" in before

    def crash(*_: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    monkeypatch.setattr(os, "rename", crash)
    runs.start(engine, "pull")  # something new to write
    with pytest.raises((OSError, Exception)):
        health.write_textfile(str(target), health.report(engine))
    assert target.read_text() == before


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool is not installed (Debian's prometheus package; .ci/run "
                           "installs it)")
def test_promtool_accepts_the_metrics_file(sqlite_url: str, tmp_path: Path,
                                           make_sim: Callable[..., Simulator],
                                           make_config: Callable[..., Config]) -> None:
    from lsq_sync.store import health, schema
    engine = db.make_engine(sqlite_url)
    schema.upgrade(engine)
    sim = make_sim(leads=5)
    fill_leads_table(sqlite_url, sim.state.lead_ids())
    app.pull(make_config(sim, sqlite_url), PullOptions())
    app.push(make_config(sim, sqlite_url))
    target = tmp_path / "lsq_sync.prom"
    health.write_textfile(str(target), health.report(engine))
    checked = subprocess.run(["promtool", "check", "metrics"], input=target.read_text(),
                             capture_output=True, text=True, timeout=60, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "lsq_sync_last_run_counts{" in target.read_text()
