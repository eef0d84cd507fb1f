"""Is the sync healthy? Last runs and successes, the edit queue, failing leads; and the
Prometheus textfile that carries the same to monitoring."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from lsq_sync.errors import StoreError
from lsq_sync.states import Command, EditStatus, RunStatus
from lsq_sync.store import hints, verifications
from lsq_sync.store.models import failed_leads, sync_runs, task_edits
from lsq_sync.store.runs import RunCounts
from lsq_sync.store.types import utcnow

COMMANDS = tuple(Command)
COUNT_NAMES = list(RunCounts().as_dict())
def _run(row: Any) -> dict[str, Any]:
    finished = row.finished_at
    return {"id": row.id, "status": row.status, "started_at": row.started_at,
            "finished_at": finished,
            "duration_s": (finished - row.started_at).total_seconds() if finished else None,
            "error": row.error, **{name: getattr(row, name) for name in COUNT_NAMES}}


def report(engine: Engine) -> dict[str, Any]:
    """What `lsq-sync status` shows: per command the last run and the last success (for a
    pull or sync: the last run that completed a pass over the leads query; a run by hand,
    `--lead-id` or `--limit`, is shown as the last run but says nothing of the query's
    freshness), edits by status, failing leads, runs under way."""
    with engine.connect() as conn:
        commands: dict[str, Any] = {}
        for command in COMMANDS:
            last = conn.execute(select(sync_runs).where(sync_runs.c.command == command)
                                .order_by(sync_runs.c.id.desc()).limit(1)).first()
            ok = sync_runs.c.pass_complete.is_(True) if Command(command).pulls \
                else sync_runs.c.status == RunStatus.SUCCEEDED
            success = conn.execute(select(func.max(sync_runs.c.finished_at)).where(
                sync_runs.c.command == command, ok)).scalar()
            commands[command] = {"last_run": _run(last) if last else None,
                                 "last_success_at": success}
        status = func.coalesce(task_edits.c.status, EditStatus.PENDING.value)
        edits = {str(s): int(n) for s, n in conn.execute(
            select(status, func.count()).group_by(status)).all()}
        failing = conn.execute(select(failed_leads).order_by(
            failed_leads.c.failures.desc(), failed_leads.c.lead_id).limit(10)).mappings().all()
        failing_total = conn.execute(select(func.count()).select_from(failed_leads)
                                     ).scalar_one()
        running = conn.execute(select(sync_runs.c.id, sync_runs.c.command, sync_runs.c.pid,
                                      sync_runs.c.host, sync_runs.c.started_at)
                               .where(sync_runs.c.status == RunStatus.RUNNING)).mappings().all()
    pulls = [commands[c]["last_success_at"] for c in Command if c.pulls]
    waiting = hints.pending(engine)
    oldest = waiting["oldest"]
    return {"commands": commands,
            "hints": {"pending": waiting["hints"], "leads": waiting["leads"],
                      "oldest_at": oldest,
                      "oldest_age_s": (utcnow() - oldest).total_seconds() if oldest else None},
            "webhooks": hints.outcomes(engine),
            "verify": verifications.last(engine),
            "last_pull_success_at": max((p for p in pulls if p), default=None),
            # Every status, and any odd value another system wrote (until a push fails it).
            "edits": {**{s.value: 0 for s in EditStatus}, **edits},
            "failing_leads": int(failing_total),
            "failing_leads_top": [dict(r) for r in failing],
            "running": [dict(r) for r in running]}


def stale(report_: dict[str, Any], max_age: timedelta, now: datetime | None = None
          ) -> str | None:
    """Why the last successful pull is too old (or missing), or None when it is fresh."""
    last = report_["last_pull_success_at"]
    now = now or utcnow()
    if last is None:
        return "no pull has succeeded yet"
    age = now - last
    if age > max_age:
        return (f"the last successful pull finished {_ago(age)} ago, at "
                f"{last:%Y-%m-%d %H:%M:%S} UTC (allowed: {_ago(max_age)})")
    return None


def ago(when: datetime, now: datetime | None = None) -> str:
    """How long ago `when` was, for people: '45s', '12m', '3h05m', '4d'."""
    return _ago((now or utcnow()) - when)


def _ago(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d"


def write_textfile(path: str, report_: dict[str, Any]) -> None:
    """The report as Prometheus metrics in a textfile-collector file, written atomically
    (prometheus_client writes a temporary file and renames it)."""
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    registry = CollectorRegistry()

    def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(name, doc, labels, registry=registry)

    last_ts = gauge("lsq_sync_last_run_timestamp_seconds",
                    "When the last run of each command finished (or started, if it has not).",
                    ("command",))
    status = gauge("lsq_sync_last_run_status",
                   "1 for the status of the last run of each command, 0 for the others.",
                   ("command", "status"))
    duration = gauge("lsq_sync_last_run_duration_seconds", "How long the last run took.",
                     ("command",))
    counts = gauge("lsq_sync_last_run_counts",
                   "The counts of the last run (leads_ok, leads_failed, tasks_upserted, "
                   "edits_sent, api_calls, throttled, ...).", ("command", "count"))
    success = gauge("lsq_sync_last_success_timestamp_seconds",
                    "When the last successful run of each command finished.", ("command",))
    edits = gauge("lsq_sync_edits", "Edits in lsq_task_edits by status.", ("status",))
    failing = gauge("lsq_sync_failing_leads", "Leads whose last fetch failed.")
    for command, info in report_["commands"].items():
        run = info["last_run"]
        if run is not None:
            when = run["finished_at"] or run["started_at"]
            last_ts.labels(command).set(when.timestamp())
            for state in RunStatus:
                status.labels(command, state).set(1 if run["status"] == state else 0)
            if run["duration_s"] is not None:
                duration.labels(command).set(run["duration_s"])
            for name in COUNT_NAMES:
                counts.labels(command, name).set(run[name] or 0)
        if info["last_success_at"] is not None:
            success.labels(command).set(info["last_success_at"].timestamp())
    for name, value in report_["edits"].items():
        edits.labels(name).set(value)
    failing.set(report_["failing_leads"])
    waiting = report_["hints"]
    gauge("lsq_sync_hints_pending", "Webhook hints not yet consumed by a fetch of their lead."
          ).set(waiting["pending"])
    gauge("lsq_sync_hints_oldest_age_seconds", "Age of the oldest pending hint (0: none)."
          ).set(waiting["oldest_age_s"] or 0)
    webhooks = gauge("lsq_sync_webhooks", "Webhooks received by `listen`, by how they were "
                     "answered (accepted, unauthorized, too_large, no_lead, unavailable, "
                     "timeout).", ("outcome",))
    for outcome, n in report_["webhooks"].items():
        webhooks.labels(outcome).set(n)
    last = report_["verify"]
    if last is not None:
        share = gauge("lsq_sync_verify_stale_share", "The last verify's estimated share of "
                      "stale tasks, and its 95% interval's bounds.", ("bound",))
        leads_ = gauge("lsq_sync_verify_stale_lead_share", "The last verify's estimated "
                       "share of leads with a stale task, and its 95% interval's bounds.",
                       ("bound",))
        for bound, suffix in (("estimate", "share"), ("low", "low"), ("high", "high")):
            share.labels(bound).set(last[f"stale_{suffix}"])
            leads_.labels(bound).set(last[f"lead_{suffix}"])
        gauge("lsq_sync_verify_timestamp_seconds", "When the last verify finished."
              ).set(last["finished_at"].timestamp())
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_to_textfile(str(target), registry)
    except OSError as exc:
        raise StoreError(f"cannot write [metrics].textfile {target}: {exc.strerror or exc}"
                         ) from None
