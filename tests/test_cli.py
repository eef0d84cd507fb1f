"""The command line through click's CliRunner: help, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import httpx
import pytest
from click.testing import CliRunner, Result

from lsq_sync.cli import cli
from lsq_sync.testing import DEMO_ACCESS_KEY, DEMO_SECRET_KEY, Simulator

from .helpers import fill_leads_table, last_words, write_config


def all_commands(group: click.Group, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    for name, command in group.commands.items():
        yield f"{prefix}{name}", command
        if isinstance(command, click.Group):
            yield from all_commands(command, f"{prefix}{name} ")


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    runner = CliRunner()
    base = {"LSQ_ACCESS_KEY": "", "LSQ_SECRET_KEY": "", "LSQ_SYNC_DATABASE_URL": "",
            "LSQ_SYNC_CONFIG": ""}
    return runner.invoke(cli, list(args), env={**base, **(env or {})}, catch_exceptions=False)


def one_line_error(result: Result) -> str:
    lines = last_words(result.output)
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_every_command_has_help() -> None:
    commands = list(all_commands(cli))
    names = {name for name, _ in commands}
    assert {"db upgrade", "db current", "pull", "runs", "simulate", "demo"} <= names
    for name, command in commands:
        assert command.help and len(command.help.strip()) > 20, name
        result = invoke(*name.split(), "--help")
        assert result.exit_code == 0, name
        assert "Usage:" in result.output
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                assert param.help, f"{name} {param.opts[0]} has no help"


def test_top_level_help_lists_exit_codes() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    assert "75 another run holds the lock" in result.output


def test_unknown_key_is_exit_2_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[lsq]\nrate_limits = 3\n")
    result = invoke("--config", str(path), "runs")
    assert result.exit_code == 2
    assert "[lsq].rate_limits" in one_line_error(result)


def test_missing_config_file_is_exit_2(tmp_path: Path) -> None:
    result = invoke("--config", str(tmp_path / "nope.toml"), "pull")
    assert result.exit_code == 2
    assert "does not exist" in one_line_error(result)
    assert "`lsq-sync init " in one_line_error(result)  # a wheel has no example to copy


def test_bad_option_is_exit_2() -> None:
    result = invoke("pull", "--limit", "0")
    assert result.exit_code == 2
    assert "Invalid value for '--limit'" in result.output  # refused for itself


def test_missing_schema_is_exit_3_and_says_what_to_do(tmp_path: Path, sim: Simulator) -> None:
    path = write_config(tmp_path / "c.toml", sim, f"sqlite:///{tmp_path / 'x.db'}")
    result = invoke("--config", str(path), "pull")
    assert result.exit_code == 3
    assert "run `lsq-sync db upgrade`" in one_line_error(result)


def test_missing_credentials_is_exit_2(tmp_path: Path, sqlite_url: str) -> None:
    path = write_config(tmp_path / "c.toml", None, sqlite_url)
    assert invoke("--config", str(path), "db", "upgrade").exit_code == 0
    result = invoke("--config", str(path), "pull")
    assert result.exit_code == 2
    assert "[lsq].access_key is required" in one_line_error(result)


def test_unreachable_database_is_exit_3(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.toml", None, f"sqlite:///{tmp_path}/no/such/dir/x.db")
    result = invoke("--config", str(path), "db", "upgrade")
    assert result.exit_code == 3
    assert "cannot connect to the database" in one_line_error(result)


def test_a_missing_driver_is_exit_2_with_the_extra_to_install(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.toml", None, "mssql+nosuchdriver://u:pw@h/x")
    result = invoke("--config", str(path), "db", "upgrade")
    assert result.exit_code == 2
    line = one_line_error(result)
    assert "[database].url" in line and ":pw@" not in line


def test_db_upgrade_and_current(tmp_path: Path, sqlite_url: str) -> None:
    path = write_config(tmp_path / "c.toml", None, sqlite_url)
    result = invoke("--config", str(path), "db", "current")
    assert result.exit_code == 0 and result.output.startswith("none")
    result = invoke("--config", str(path), "db", "upgrade")
    assert result.exit_code == 0 and "upgraded from nothing to revision" in result.output
    result = invoke("--config", str(path), "db", "upgrade")
    assert "already at revision" in result.output
    result = invoke("--config", str(path), "db", "current")
    assert "(current)" in result.output


def test_database_url_from_the_environment(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'env.db'}"
    result = invoke("db", "upgrade", env={"LSQ_SYNC_DATABASE_URL": url})
    assert result.exit_code == 0, result.output
    assert (tmp_path / "env.db").exists()


@pytest.fixture
def ready(tmp_path: Path, sim: Simulator, sqlite_url: str) -> Callable[..., Path]:
    def build(**lsq: Any) -> Path:
        path = write_config(tmp_path / "c.toml", sim, sqlite_url, **lsq)
        assert invoke("--config", str(path), "db", "upgrade").exit_code == 0
        fill_leads_table(sqlite_url, sim.state.lead_ids())
        return path
    return build


def test_pull_runs_and_runs_lists_it(ready: Callable[..., Path]) -> None:
    path = ready()
    result = invoke("--config", str(path), "pull")
    assert result.exit_code == 0, result.output
    events = [json.loads(ln) for ln in result.output.splitlines() if ln.startswith("{")]
    summary = [e for e in events if e["event"] == "run_finished"]
    assert len(summary) == 1 and summary[0]["leads_ok"] == 40 and summary[0]["run_id"] == 1
    result = invoke("--config", str(path), "runs")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].startswith("id") and "succeeded" in lines[1] and "40/0/40" in lines[1]
    assert all(len(line) <= 80 for line in lines)


def test_runs_fits_80_columns_with_a_long_error(ready: Callable[..., Path]) -> None:
    path = ready(max_calls_per_run=3)  # the cap's stop reason is a long error
    assert invoke("--config", str(path), "pull").exit_code == 0
    lines = invoke("--config", str(path), "runs").output.splitlines()
    assert len(lines) == 2 and lines[1].endswith("…") and "  stopped a" in lines[1]
    assert all(len(line) <= 80 for line in lines), lines


def test_every_log_line_of_a_run_carries_its_run_id(ready: Callable[..., Path]) -> None:
    path = ready()
    result = invoke("--config", str(path), "pull")
    events = [json.loads(ln) for ln in result.output.splitlines() if ln.startswith("{")]
    assert events and all(e.get("run_id") == 1 for e in events)


def test_failed_leads_make_exit_1(ready: Callable[..., Path], sim: Simulator) -> None:
    path = ready()
    sim.cfg.faults.mx_error_every = 10
    result = invoke("--config", str(path), "pull")
    assert result.exit_code == 1
    failed = [json.loads(ln) for ln in result.output.splitlines()
              if ln.startswith("{") and '"lead_failed"' in ln]
    assert len(failed) == 4
    assert failed[0]["exception_type"] == "MXInvalidLeadException"
    assert "locked for migration" in failed[0]["message"]
    (last,) = [json.loads(ln) for ln in result.output.splitlines()
               if ln.startswith("{") and '"event": "exit"' in ln]
    assert last["run_id"] == failed[0]["run_id"] == 1  # the last word names the run too


def test_rejected_credentials_are_exit_3(ready: Callable[..., Path]) -> None:
    path = ready(secret_key="not-the-key")
    result = invoke("--config", str(path), "pull")
    assert result.exit_code == 3
    assert "rejected the credentials or the host" in one_line_error(result)


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    result = invoke("demo", "--dir", str(tmp_path / "demo"), "--leads", "30")
    assert result.exit_code == 0, result.output
    assert "run 1 succeeded: 30/30 leads" in result.output
    assert "1 marked deleted" in result.output
    assert "owner" in result.output and "Pending" in result.output
    assert "webhook (event 16) received, lead pulled, lsq_tasks shows it Completed" in \
        result.output
    assert (tmp_path / "demo" / "lsq_sync.db").exists()
    runs = invoke("--config", str(tmp_path / "demo" / "lsq_sync.toml"), "runs")
    assert runs.exit_code == 0 and len(runs.output.splitlines()) == 4  # pull, pull, listen
    assert '"event"' not in result.output  # the runs' sentences, not their log lines
    again = invoke("demo", "--dir", str(tmp_path / "demo"), "--leads", "10")
    assert again.exit_code == 0 and "an earlier demo's database there was replaced" in \
        again.output
    runs = invoke("--config", str(tmp_path / "demo" / "lsq_sync.toml"), "runs")
    assert len(runs.output.splitlines()) == 4  # started clean: its own three runs only


def test_the_demo_never_touches_a_database_it_did_not_write(tmp_path: Path) -> None:
    mine = tmp_path / "lsq_sync.db"
    mine.write_bytes(b"someone's data")
    result = invoke("demo", "--dir", str(tmp_path), "--leads", "3")
    assert result.exit_code == 2 and "the demo did not write" in one_line_error(result)
    assert mine.read_bytes() == b"someone's data"


def test_simulate_serves_from_the_command_line(tmp_path: Path) -> None:
    leads_db = f"sqlite:///{tmp_path / 'leads.db'}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lsq_sync", "simulate", "--port", "0", "--leads", "12",
         "--leads-db", leads_db], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "wrote 12 lead ids" in first
        second = proc.stdout.readline()
        url = second.split(" on ")[1].split(":")[0:3]
        base = ":".join(url).rstrip(",")
        answer = httpx.get(f"{base}/v2/Authentication.svc/UserByAccessKey.Get",
                           headers={"x-LSQ-AccessKey": DEMO_ACCESS_KEY,
                                    "x-LSQ-SecretKey": DEMO_SECRET_KEY}, timeout=5)
        assert answer.status_code == 200 and answer.json()["LSQCommonServiceURLs"]["api"]
        denied = httpx.get(f"{base}/v2/LeadManagement.svc/RetrieveTaskByLeadId",
                           params={"leadId": "x"}, timeout=5)
        assert denied.status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_simulate_rejects_bad_options() -> None:
    assert invoke("simulate", "--rate-limit", "abc").exit_code == 2
    assert invoke("simulate", "--latency", "9-1").exit_code == 2


def test_a_bug_is_one_line_and_exit_3(ready: Callable[..., Path],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from lsq_sync.store import tasks as store

    def broken(*_: Any, **__: Any) -> Any:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(store, "chunks", broken)
    path = ready()
    result = invoke("--config", str(path), "pull")
    assert result.exit_code == 3
    assert [ln for ln in result.output.splitlines() if not ln.startswith("{")] == []
    (last,) = last_words(result.output)  # JSON logs: the last word is a JSON event too
    assert "internal error (ZeroDivisionError)" in last and "Traceback" not in last
    events = [json.loads(ln) for ln in result.output.splitlines() if ln.startswith("{")]
    assert any(e["event"] == "internal_error" and "a bug" in e.get("exception", "")
               for e in events)
    (summary,) = [e for e in events if e["event"] == "run_finished"]
    assert summary["status"] == "failed" and "internal error" in summary["error"]


# -- setup, health and endings -----------------------------------------------------------

def test_init_writes_the_example_once_and_it_loads(tmp_path: Path) -> None:
    from lsq_sync import config
    target = tmp_path / "lsq_sync.toml"
    first = invoke("init", str(target))
    assert first.exit_code == 0 and target.is_file() and "db upgrade" in first.output
    assert "[metrics]" in target.read_text() and "on_conflict" in target.read_text()
    assert "Copy to" not in target.read_text()  # it is the copy
    assert target.read_text().startswith("# lsq-sync configuration, written by `lsq-sync init`")
    config.load(str(target), env={})  # every key it holds is valid
    target.write_text("# mine\n")
    again = invoke("init", str(target))
    assert again.exit_code == 2 and "exists already; nothing was written" in \
        one_line_error(again)
    assert target.read_text() == "# mine\n"
    in_dir = invoke("init", str(tmp_path))
    assert in_dir.exit_code == 2  # the folder's lsq_sync.toml is the one above


def test_no_config_anywhere_is_exit_2_saying_where_it_looked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for args in (["runs"], ["pull"], ["db", "upgrade"], ["status"]):
        result = invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        line = one_line_error(result)
        assert "no config file" in line and "lsq-sync init" in line and "LSQ_SYNC_CONFIG" in line
    assert not (tmp_path / "lsq_sync.db").exists()  # nothing created on defaults
    via_env = invoke("db", "upgrade",
                     env={"LSQ_SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'env.db'}"})
    assert via_env.exit_code == 0, via_env.output


def test_status_and_metrics_after_succeeded_partial_and_failed_runs(
        tmp_path: Path, make_sim: Callable[..., Simulator], sqlite_url: str) -> None:
    sim = make_sim(leads=20)
    metrics = tmp_path / "prom" / "lsq_sync.prom"
    path = write_config(tmp_path / "c.toml", sim, sqlite_url)
    path.write_text(path.read_text() + f'[metrics]\ntextfile = "{metrics}"\n')
    assert invoke("--config", str(path), "db", "upgrade").exit_code == 0
    fill_leads_table(sqlite_url, sim.state.lead_ids())

    def status(*args: str) -> Any:
        result = invoke("--config", str(path), "status", "--json", *args)
        return result, json.loads(result.output.splitlines()[0])

    result, report = status("--max-age", "1h")
    assert result.exit_code == 1 and "no pull has succeeded yet" in one_line_error(result)
    assert report["commands"]["pull"]["last_run"] is None

    assert invoke("--config", str(path), "pull").exit_code == 0        # succeeded
    result, report = status("--max-age", "30m")
    assert result.exit_code == 0 and report["stale"] is None
    assert report["commands"]["pull"]["last_run"]["status"] == "succeeded"
    text = metrics.read_text()
    assert 'lsq_sync_last_run_status{command="pull",status="succeeded"} 1.0' in text
    assert 'lsq_sync_last_run_counts{command="pull",count="leads_ok"} 20.0' in text
    assert "lsq_sync_last_success_timestamp_seconds{command=\"pull\"}" in text

    sim.cfg.faults.mx_error_every = 7                                   # partial
    partial = invoke("--config", str(path), "pull")
    assert partial.exit_code == 1
    line = one_line_error(partial)
    assert "pull run 2 is partial: 3 leads failed" in line and "runs show 2" in line
    finished = [json.loads(ln) for ln in partial.output.splitlines()
                if '"run_finished"' in ln]
    assert finished[0]["level"] == "warning"
    _, report = status()
    assert report["failing_leads"] == 3
    assert 'lsq_sync_last_run_status{command="pull",status="partial"} 1.0' in \
        metrics.read_text()
    assert "lsq_sync_failing_leads 3.0" in metrics.read_text()

    wrong = invoke("--config", str(path), "pull", env={"LSQ_SECRET_KEY": "wrong-key"})
    assert wrong.exit_code == 3                                         # failed
    finished = [json.loads(ln) for ln in wrong.output.splitlines() if '"run_finished"' in ln]
    assert finished[0]["level"] == "error"
    assert 'lsq_sync_last_run_status{command="pull",status="failed"} 1.0' in \
        metrics.read_text()
    human = invoke("--config", str(path), "status")
    assert human.exit_code == 0 and "pull   last run 3 failed, finished " in human.output
    assert "s ago)" in human.output and "last success " in human.output
    assert "failing leads: 3" in human.output
    bad = invoke("--config", str(path), "status", "--max-age", "soon")
    assert bad.exit_code == 2 and "not a duration" in one_line_error(bad)


def test_a_call_cap_is_a_planned_stop_exit_0(ready: Callable[..., Path]) -> None:
    path = ready(max_calls_per_run=7)
    result = invoke("--config", str(path), "pull")
    assert result.exit_code == 0, result.output
    events = [json.loads(ln) for ln in result.output.splitlines() if ln.startswith("{")]
    (summary,) = [e for e in events if e["event"] == "run_finished"]
    assert summary["status"] == "partial" and summary["api_calls"] == 7
    assert "call cap" in summary["error"]


# Every command that reads or writes the synced tables, with arguments that would work.
SCHEMA_USERS = [["pull"], ["push"], ["sync"], ["runs"], ["runs", "show", "1"], ["edits"],
                ["edits", "retry", "1"], ["edits", "cancel", "1"], ["status"],
                ["edit", "5151aaaa-0000-4000-8000-000000000001", "--name", "x"],
                ["push", "--dry-run", "--offline"]]


@pytest.mark.parametrize("args", SCHEMA_USERS, ids=" ".join)
def test_every_command_refuses_an_old_schema(args: list[str], tmp_path: Path,
                                             sim: Simulator, sqlite_url: str) -> None:
    from lsq_sync.store import db, schema
    engine = db.make_engine(sqlite_url)
    schema.upgrade(engine, "0006")  # one revision behind
    engine.dispose()
    path = write_config(tmp_path / "c.toml", sim, sqlite_url)
    result = invoke("--config", str(path), *args)
    assert result.exit_code == 3, result.output
    assert "run `lsq-sync db upgrade`" in one_line_error(result)
    assert sim.meter.snapshot()["received"] == 0


def test_the_first_signal_stops_gracefully_even_when_the_run_is_stopping() -> None:
    """A run stopping at its call cap is not yet signalled: the first SIGTERM asks for a
    clean stop, only the second one interrupts."""
    import signal

    from lsq_sync.cli.commands import graceful
    from lsq_sync.control import StopReason
    from lsq_sync.core import app
    ctx = graceful(app.Context())
    ctx.stop.set(StopReason.CALL_CAP)
    handler = signal.getsignal(signal.SIGTERM)
    assert callable(handler)
    handler(signal.SIGTERM, None)  # no KeyboardInterrupt: the first signal
    assert ctx.stop.reason == StopReason.CALL_CAP  # the first reason stands
    with pytest.raises(KeyboardInterrupt):
        handler(signal.SIGTERM, None)


HOSTILE_ID = "t\x1b[2J\x1b]0;owned\x07\u202e"


def test_ids_and_messages_from_the_database_reach_no_terminal_raw(
        ready: Callable[..., Path], sqlite_url: str) -> None:
    from sqlalchemy import insert, text

    from lsq_sync.store import db
    from lsq_sync.store.models import task_edits
    path = ready()
    assert invoke("--config", str(path), "pull").exit_code == 0
    engine = db.make_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(insert(task_edits).values(task_id=HOSTILE_ID, name="x\x1b[31m"))
        conn.execute(text("INSERT INTO lsq_task_edits (task_id, name, created_at) "
                          "VALUES ('t-2', 'y', :at)"), {"at": "not a \x1b[2J time"})
    outputs = [invoke("--config", str(path), *args) for args in (
        ["edits"], ["push", "--dry-run", "--offline"], ["push"], ["runs"],
        ["runs", "show", "2"], ["edits", "--status", "failed"])]
    for result in outputs:
        assert "Traceback" not in result.output
        assert not any(c in result.output for c in "\x1b\x07\u202e"), result.output
    assert outputs[0].exit_code == 0
    assert "t\\x1b[2J\\x1b]0;owned\\x07\\u202e" in outputs[0].output
    assert "created not a \\x1b[2J time" in outputs[0].output
    assert "edit 1 of task t\\x1b[2J\\x1b]0;owned\\x07\\u202e  failed" in outputs[4].output


HUGE = "99999999999999999999999"


@pytest.mark.parametrize("args", [
    ["runs", "show", HUGE], ["runs", "--limit", HUGE], ["edits", "retry", HUGE],
    ["edits", "cancel", HUGE], ["edits", "--limit", HUGE], ["pull", "--limit", HUGE],
    ["status", "--max-age", HUGE + "d"], ["status", "--max-age", "1e999"],
    ["status", "--max-age", "\u0663h"],
])
def test_a_huge_number_on_the_command_line_is_exit_2(args: list[str], tmp_path: Path,
                                                     sqlite_url: str) -> None:
    path = write_config(tmp_path / "c.toml", None, sqlite_url)
    assert invoke("--config", str(path), "db", "upgrade").exit_code == 0
    result = invoke("--config", str(path), *args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert len([ln for ln in result.output.splitlines() if ln.strip()]) <= 4  # click's usage


@pytest.mark.parametrize(("setting", "key"), [
    ('[leads]\nwatermark_overlap_s = 1e300', "[leads].watermark_overlap_s"),
    ('[lsq]\ntimeout_s = 1e308', "[lsq].timeout_s"),
    ('[lsq]\ntimeout_s = inf', "[lsq].timeout_s"),
    ('[lsq]\nretry_backoff_s = 1e20', "[lsq].retry_backoff_s"),
    ('[lsq]\nbase_url = "http://[::1"', "[lsq].base_url"),
    ('[lsq]\nbase_url = "http://host:port"', "[lsq].base_url"),
    ('[lsq]\nmax_calls_per_day = 99999999999999999999', "[lsq].max_calls_per_day"),
])
def test_a_config_value_past_any_sense_is_exit_2_naming_the_key(
        setting: str, key: str, tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(setting + "\n")
    result = invoke("--config", str(path), "runs")
    assert result.exit_code == 2, result.output
    assert key in one_line_error(result)


def test_durations_take_units_together() -> None:
    from datetime import timedelta

    from lsq_sync.config import parse_duration
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("2w") == timedelta(days=14)
    assert parse_duration(" 90 ") == timedelta(seconds=90)
    assert parse_duration("1.5d") == timedelta(hours=36)


def test_the_cli_gives_the_log_redactor_every_secret(ready: Callable[..., Path],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug whose message holds the secret key: only the log processor the CLI set up
    stands between it and the `internal_error` event's traceback."""
    from lsq_sync.store import tasks as store

    def leaky(*_: Any, **__: Any) -> Any:
        raise RuntimeError(f"a bug that quotes {DEMO_SECRET_KEY} and {DEMO_ACCESS_KEY}")

    monkeypatch.setattr(store, "chunks", leaky)
    result = invoke("--config", str(ready()), "pull")
    assert result.exit_code == 3
    events = [json.loads(ln) for ln in result.output.splitlines() if ln.startswith("{")]
    (bug,) = [e for e in events if e["event"] == "internal_error"]
    assert "a bug that quotes *** and ***" in bug["exception"]
    assert DEMO_SECRET_KEY not in result.output and DEMO_ACCESS_KEY not in result.output


@pytest.mark.parametrize("leads", [1, 2, 3, 4])
def test_the_demo_runs_with_the_fewest_leads_its_help_allows(leads: int, tmp_path: Path) -> None:
    result = invoke("demo", "--leads", str(leads), "--dir", str(tmp_path / "demo"))
    assert result.exit_code == 0, result.output[-2000:]
    assert "Traceback" not in result.output and f"{leads} leads" in result.output


def test_the_demo_writes_a_config_it_can_read_back_from_any_folder(tmp_path: Path) -> None:
    folder = tmp_path / "d\U0001F600 \"q\""
    assert invoke("demo", "--leads", "3", "--dir", str(folder)).exit_code == 0
    again = invoke("--config", str(folder / "lsq_sync.toml"), "runs")
    assert again.exit_code == 0, again.output
    assert "succeeded" in again.output


@pytest.mark.parametrize(("env", "flag", "colored"), [
    ({"FORCE_COLOR": "1"}, [], True), ({"FORCE_COLOR": "1", "NO_COLOR": "1"}, [], False),
    ({"FORCE_COLOR": "1"}, ["--no-color"], False), ({}, [], False),
    ({"TERM": "dumb", "NO_COLOR": ""}, [], False),
])
def test_colours_follow_no_color_force_color_and_the_flag(
        env: dict[str, str], flag: list[str], colored: bool,
        ready: Callable[..., Path]) -> None:
    base = {"NO_COLOR": "", "FORCE_COLOR": "", "TERM": "xterm"}
    result = invoke(*flag, "--log-format", "console", "--config", str(ready()), "pull",
                    "--limit", "1", env={**base, **env})
    assert result.exit_code == 0 and "run_finished" in result.output
    assert ("\x1b[" in result.output) is colored, result.output


def test_config_show_says_where_each_value_came_from_and_masks_secrets(
        tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[database]\nurl = "postgresql://me:hunter22@db.example/tasks"\n'
                    '[lsq]\naccess_key = "u$file-access-key"\n')
    result = invoke("--config", str(path), "config", "show", "--json",
                    env={"LSQ_SYNC__LSQ__TIMEOUT_S": "7", "LSQ_SECRET_KEY": "env-secret-key"})
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)["config"]
    assert shown["lsq"]["timeout_s"] == {"value": 7.0,
                                         "from": "environment ($LSQ_SYNC__LSQ__TIMEOUT_S)"}
    assert shown["lsq"]["secret_key"] == {"value": "***",
                                          "from": "environment ($LSQ_SECRET_KEY)"}
    assert shown["lsq"]["access_key"] == {"value": "***", "from": "file"}
    assert shown["lsq"]["auth"] == {"value": "header", "from": "default"}
    assert "hunter22" not in result.output and "***" in shown["database"]["url"]["value"]
    assert "env-secret-key" not in result.output and "file-access-key" not in result.output
    text = invoke("--config", str(path), "config", "show")
    assert "timeout_s = 30.0  # default" in text.output and "hunter22" not in text.output


def test_edit_takes_a_due_date_as_people_type_it(ready: Callable[..., Path],
                                                  sim: Simulator) -> None:
    path = ready()
    assert invoke("--config", str(path), "pull").exit_code == 0
    task_id = next(t["TaskID"] for x in sim.state.lead_ids() for t in sim.state.tasks_of(x))
    for typed, stored in [("2026-02-01T10:00", "2026-02-01 10:00:00"),
                          ("2026-02-01T10:00+05:30", "2026-02-01 04:30:00")]:
        queued = invoke("--config", str(path), "edit", task_id, "--due", typed)
        assert queued.exit_code == 0, queued.output
        shown = invoke("--config", str(path), "edits", "--json").output.splitlines()
        assert json.loads(shown[0])["fields"] == {"due_date": stored}
    wrong = invoke("--config", str(path), "edit", task_id, "--due", "2026-02-30 10:00:00")
    assert wrong.exit_code == 2 and "is not a real date" in one_line_error(wrong)


def test_runs_show_of_a_push_leaves_out_what_only_a_pull_sets(
        ready: Callable[..., Path]) -> None:
    path = ready()
    assert invoke("--config", str(path), "push").exit_code == 0
    shown = invoke("--config", str(path), "runs", "show", "1").output
    assert "edits_sent" in shown and "leads_total" not in shown and "pass_since" not in shown
    full = json.loads(invoke("--config", str(path), "runs", "show", "1", "--json").output)
    assert "leads_total" in full  # scripts get every column


def test_quiet_keeps_warnings_and_errors_only(ready: Callable[..., Path], sim: Simulator
                                              ) -> None:
    path = ready()
    sim.cfg.faults.mx_error_every = 10
    result = invoke("--quiet", "--config", str(path), "pull")
    assert result.exit_code == 1
    events = [json.loads(ln)["event"] for ln in result.output.splitlines()
              if ln.startswith("{")]
    assert "lead_failed" in events and "run_started" not in events and "exit" in events
    both = invoke("--quiet", "--log-level", "info", "--config", str(path), "pull")
    assert both.exit_code == 2


def test_debug_shows_requests_and_sql_timings_without_keys(ready: Callable[..., Path]
                                                           ) -> None:
    path = ready(auth="query")  # the keys travel in the query string: never in a log line
    result = invoke("--log-level", "debug", "--config", str(path), "pull", "--limit", "2")
    assert result.exit_code == 0, result.output[-1000:]
    events = [json.loads(ln) for ln in result.output.splitlines() if ln.startswith("{")]
    requests = [e for e in events if e["event"] == "request"]
    assert len(requests) == 2 and all(e["path"].endswith("RetrieveTaskByLeadId")
                                      and "lead_id" in e for e in requests)
    assert any(e["event"].startswith("sql ") and " ms " in e["event"] for e in events)
    assert DEMO_ACCESS_KEY not in result.output and DEMO_SECRET_KEY not in result.output


def test_pull_calls_is_a_planned_stop(ready: Callable[..., Path]) -> None:
    result = invoke("--config", str(ready()), "pull", "--calls", "3")
    assert result.exit_code == 0, result.output
    events = [json.loads(ln) for ln in result.output.splitlines() if ln.startswith("{")]
    (summary,) = [e for e in events if e["event"] == "run_finished"]
    assert summary["api_calls"] == 3 and "call cap" in summary["error"]


def test_full_goes_with_neither_lead_ids_nor_a_limit(ready: Callable[..., Path]) -> None:
    result = invoke("--config", str(ready()), "pull", "--full", "--limit", "3")
    assert result.exit_code == 2
    assert "is a pass over the whole leads query" in one_line_error(result)
