"""`lsq-sync demo`: the whole job on a simulated account and a SQLite file, no setup."""

from __future__ import annotations

import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import Column, MetaData, String, Table, delete, insert, select, text
from sqlalchemy.engine import Engine

from lsq_sync import config
from lsq_sync.cli.render import table
from lsq_sync.control import StopReason
from lsq_sync.core import app
from lsq_sync.core.pull import PullOptions
from lsq_sync.core.result import RunResult
from lsq_sync.errors import ConfigError
from lsq_sync.listen import service
from lsq_sync.store import db, schema
from lsq_sync.store.models import tasks
from lsq_sync.testing import Faults, SimConfig, Simulator, WebhookConfig

DEMO_CALLS, DEMO_PERIOD = 25, 2.0
REPORT_SQL = """\
SELECT owner_name, status, tasks
FROM lsq_task_counts_by_owner
ORDER BY owner_name, status"""


def fill_leads_table(url: str, lead_ids: Iterable[str], table: str = "leads") -> int:
    """Create (or empty) a one-column table of lead ids, as a CRM export would be."""
    meta = MetaData()
    leads = Table(table, meta, Column("lead_id", String(64), primary_key=True))
    engine = db.make_engine(url, key="--leads-db")
    db.check_connection(engine)
    rows = [{"lead_id": lead_id} for lead_id in lead_ids]
    with engine.begin() as conn:
        meta.create_all(conn)
        conn.execute(delete(leads))
        for start in range(0, len(rows), 5000):
            conn.execute(insert(leads), rows[start:start + 5000])
    engine.dispose()
    return len(rows)


def run(directory: str | None, *, leads: int = 250, tty: bool = False,
        echo: Callable[[str], Any] = print) -> int:
    folder = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="lsq-sync-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    reused = _start_clean(folder)
    db_url = f"sqlite:///{(folder / 'lsq_sync.db').resolve()}"
    sim_cfg = SimConfig(leads=leads, seed=7, rate_calls=DEMO_CALLS, rate_period_s=DEMO_PERIOD,
                        faults=Faults(latency_ms=(30, 120), bare_500=0.01))
    with Simulator(sim_cfg) as sim:
        settings = {
            "lsq": sim.lsq_settings(rate_limit_calls=DEMO_CALLS,
                                    rate_limit_period_s=DEMO_PERIOD, retry_backoff_s=0.2),
            "database": {"url": db_url},
        }
        cfg = config.from_mapping(settings, env={}, source="demo")
        (folder / "lsq_sync.toml").write_text(
            MARK + config.to_toml({"database": {"url": db_url}}), encoding="utf-8")
        echo(f"lsq-sync demo in {folder}"
             + (" (an earlier demo's database there was replaced)" if reused else ""))
        echo(f"  simulated account at {sim.url}: {leads} leads, limit {DEMO_CALLS} calls "
             f"per {DEMO_PERIOD:g} s, 30-120 ms latency, 1% server errors")
        engine = db.make_engine(db_url)
        schema.upgrade(engine)
        fill_leads_table(db_url, sim.state.lead_ids())
        echo(f"  database {db_url} migrated; table `leads` holds the lead ids")
        echo("")
        echo("1. Full pull of every lead:")
        first = app.pull(cfg, PullOptions(), app.Context(tty=tty))
        _summary(echo, first)

        echo("")
        changed, what = _change_crm(sim)
        failures = first.counts.failures
        if changed:
            echo(f"2. Meanwhile in the CRM: {', '.join(what)}. Pulling those leads again:")
            second = app.pull(cfg, PullOptions(lead_ids=changed), app.Context(tty=tty))
            _summary(echo, second)
            failures += second.counts.failures
        else:
            echo("2. (The simulated account has no tasks to change: try more --leads.)")

        echo("")
        failures += _webhook_step(echo, sim, settings, engine)

        echo("")
        echo(f"4. A report on the synced table (more in {_reporting_doc()}):")
        echo("")
        echo("\n".join("   " + line for line in REPORT_SQL.splitlines()))
        echo("")
        with engine.connect() as conn:
            rows = conn.execute(text(REPORT_SQL)).all()
        for line in table(rows, ["owner", "status", "tasks"]):
            echo("   " + line)
        echo("")
        echo("Explore further:")
        echo(f"  lsq-sync --config {folder / 'lsq_sync.toml'} runs")
        echo(f"  sqlite3 {folder / 'lsq_sync.db'} 'SELECT * FROM lsq_tasks LIMIT 5'")
        engine.dispose()
        return 1 if failures else 0


MARK = "# Written by `lsq-sync demo`; its simulator is gone, the database stays.\n"
DEMO_FILES = ("lsq_sync.db", "lsq_sync.db-wal", "lsq_sync.db-shm", "lsq_sync.toml")


def _reporting_doc() -> str:
    """docs/reporting.md: in a source checkout, or shipped in the wheel."""
    package = Path(__file__).resolve().parent.parent
    for doc in (package.parent / "docs" / "reporting.md", package / "docs" / "reporting.md"):
        if doc.is_file():
            return str(doc)
    return "docs/reporting.md in lsq-sync's source"


def _start_clean(folder: Path) -> bool:
    """Remove what an earlier demo left in `folder` (its config carries MARK); a database
    the demo did not write is never touched. Returns whether an earlier demo was there."""
    config_file = folder / "lsq_sync.toml"
    ours = config_file.is_file() and config_file.read_text(encoding="utf-8",
                                                            errors="replace").startswith(MARK)
    if not ours:
        if any((folder / name).exists() for name in DEMO_FILES):
            raise ConfigError(f"{folder} holds an lsq_sync.db or lsq_sync.toml the demo did "
                              f"not write; give --dir an empty folder (nothing was changed)")
        return False
    for name in DEMO_FILES:
        (folder / name).unlink(missing_ok=True)
    return True


def _change_crm(sim: Simulator) -> tuple[list[str], list[str]]:
    """A rename, a deletion and a move, on as many as the account's leads allow (a small
    --leads may have one lead with tasks, or none). Returns the leads and what changed."""
    state = sim.state
    leads = sorted(state.lead_ids(), key=lambda lead: -len(state.tasks_of(lead)))
    touched: list[str] = []
    done: list[str] = []
    if leads and state.tasks_of(leads[0]):
        state.change_task(state.tasks_of(leads[0])[0]["TaskID"], Name="Renamed in the CRM")
        touched.append(leads[0])
        done.append("one task renamed")
    if len(leads) > 1 and len(state.tasks_of(leads[1])) > 1:
        state.delete_task(state.tasks_of(leads[1])[0]["TaskID"])
        touched.append(leads[1])
        done.append("one deleted")
    if len(leads) > 2 and touched and state.tasks_of(leads[2]):
        state.move_task(state.tasks_of(leads[2])[0]["TaskID"], leads[0])
        touched.append(leads[2])
        done.append("one moved to another lead")
    return touched, done


def _webhook_step(echo: Callable[[str], Any], sim: Simulator, settings: dict[str, Any],
                  engine: Engine) -> int:
    """`listen` receives the simulator's webhook for a change and pulls that lead at once.
    Returns 1 if the change did not arrive."""
    secret = secrets.token_urlsafe(24)
    cfg = config.from_mapping({**settings, "listen": {"port": 0, "secret": secret}},
                              env={}, source="demo")
    task_id = next((task["TaskID"] for lead in sim.state.lead_ids()
                    for task in sim.state.tasks_of(lead) if task["Status"] != "Completed"), None)
    if task_id is None:
        echo("3. (No open task to complete: try more --leads.)")
        return 0
    ctx = app.Context()
    ready = threading.Event()
    where: list[service.Listening] = []

    def on_ready(listening: service.Listening) -> None:
        where.append(listening)
        ready.set()

    thread = threading.Thread(target=service.serve, args=(cfg, ctx),
                              kwargs={"on_ready": on_ready}, daemon=True)
    thread.start()
    try:
        if not ready.wait(15):
            echo("3. `listen` did not start; see the log above")
            return 1
        echo(f"3. `lsq-sync listen` on {where[0].url}; the CRM posts a webhook for every task "
             f"change. A task is completed in the CRM:")
        sim.send_webhooks(WebhookConfig(url=where[0].url,
                                        header=(cfg.listen.header, secret)))
        changed = time.monotonic()
        sim.state.change_task(task_id, Status="Completed")
        status = None
        while time.monotonic() - changed < 15 and status != "Completed":
            time.sleep(0.02)
            with engine.connect() as conn:
                status = conn.execute(select(tasks.c.status).where(
                    tasks.c.task_id == task_id)).scalar()
        if status != "Completed":
            echo("   the change did not arrive within 15 s")
            return 1
        took = time.monotonic() - changed
        echo(f"   webhook (event 16) received, lead pulled, lsq_tasks shows it Completed "
             f"{took:.2f} s after the change (one API call, no pass)")
        return 0
    finally:
        ctx.stop.set(StopReason.SIGNAL)
        thread.join(20)


def _summary(echo: Callable[[str], Any], result: RunResult) -> None:
    echo("   " + result.summary())
    if result.retries:
        echo(f"   ({result.retries} transient server errors, injected by the simulator, "
             f"were retried and healed)")
    failed = result.what_failed()
    if failed:
        echo(f"   {failed}")
