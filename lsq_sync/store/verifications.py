"""lsq_verify_results: what each `verify` run estimated (the last one goes to `status`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from lsq_sync.store.models import verify_results
from lsq_sync.store.types import json_dumps, utcnow

COLUMNS = ("population", "sampled", "failed", "tasks", "stale_tasks", "stale_share",
           "stale_low", "stale_high", "stale_leads", "lead_share", "lead_low", "lead_high",
           "missing", "deleted", "differing")


def save(engine: Engine, run_id: int, found: dict[str, Any]) -> None:
    with engine.begin() as conn:
        conn.execute(insert(verify_results).values(
            run_id=run_id, finished_at=utcnow(), fields=json_dumps(found.get("fields", {})),
            **{name: found[name] for name in COLUMNS}))


def last(engine: Engine) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(select(verify_results).order_by(
            verify_results.c.run_id.desc()).limit(1)).mappings().first()
    return dict(row) if row is not None else None
