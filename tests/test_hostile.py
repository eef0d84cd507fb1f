"""A hostile server: every fault mode at once. Good leads sync, bad ones are reported."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.engine import Engine

from lsq_sync.cli import cli
from lsq_sync.leadsquared.tasks import parse_date
from lsq_sync.store.models import tasks
from lsq_sync.testing import Faults, Simulator

from .helpers import fill_leads_table


@pytest.mark.slow
@pytest.mark.parametrize("throttle_status", [200, 403, 429])
def test_everything_at_once(throttle_status: int, db_url: str, engine: Engine,
                            make_sim: Callable[..., Simulator], tmp_path: Path) -> None:
    if throttle_status != 429 and not db_url.startswith("sqlite"):
        pytest.skip("the throttle's HTTP status is the client's matter: every status on "
                    "SQLite, every dialect with 429")
    faults = Faults(bare_500=0.06, malformed=0.05, html_502=0.04, drop=0.04, slow=0.03,
                    slow_s=1.0, mx_error_every=13, bad_record_every=11)
    # The account allows 12 per 0.5 s; lsq-sync is told 40: the throttle answers teach it.
    sim = make_sim(leads=60, rate_calls=12, rate_period_s=0.5,
                   throttle_status=throttle_status, faults=faults)
    fill_leads_table(db_url, sim.state.lead_ids())
    config = tmp_path / "c.toml"
    config.write_text(
        f'[lsq]\nbase_url = "{sim.url}"\naccess_key = "{sim.cfg.access_key}"\n'
        f'secret_key = "{sim.cfg.secret_key}"\nrate_limit_calls = 40\n'
        f'rate_limit_period_s = 0.5\nretry_backoff_s = 0.01\nmax_attempts = 12\n'
        f'timeout_s = 0.5\n[database]\nurl = "{db_url}"\n[log]\nformat = "json"\n')
    result = CliRunner().invoke(cli, ["--config", str(config), "pull"],
                                env={"LSQ_ACCESS_KEY": "", "LSQ_SECRET_KEY": ""})
    assert "Traceback" not in result.output
    assert result.exit_code == 1, result.output[-2000:]

    state = sim.state
    mx = {state.lead_id(i) for i in range(60) if i % 13 == 1}
    bad = {state.lead_id(i) for i in range(60) if i % 11 == 2 and state.tasks_of(state.lead_id(i))}
    events = [json.loads(ln) for ln in result.output.splitlines() if ln.startswith("{")]
    failed = {e["lead_id"] for e in events if e["event"] == "lead_failed"}
    assert failed == mx  # a bad task is skipped: its lead's other tasks are written
    skipped = {e["lead_id"]: e["task_id"] for e in events if e["event"] == "task_skipped"}
    assert set(skipped) == bad
    kinds = {e["lead_id"]: e.get("exception_type") for e in events if e["event"] == "lead_failed"}
    assert all(kinds[lead] == "MXInvalidLeadException" for lead in mx)
    assert any(e["event"] == "throttled" for e in events)
    assert any(e["event"] == "retry" for e in events)
    (summary,) = [e for e in events if e["event"] == "run_finished"]
    assert summary["leads_ok"] == 60 - len(mx) and summary["throttled"] > 0
    assert summary["tasks_skipped"] == len(bad)

    with engine.connect() as conn:
        rows = {r.task_id: r for r in conn.execute(select(tasks))}
    for lead in state.lead_ids():
        for task in state.tasks_of(lead):
            if lead in mx or skipped.get(lead) == task["TaskID"]:
                assert task["TaskID"] not in rows
            else:
                row = rows[task["TaskID"]]
                assert (row.lead_id, row.name, row.due_date) == (
                    lead, task["Name"], parse_date(task["DueDate"]))
