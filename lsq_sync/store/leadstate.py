"""lsq_lead_state: which fetch of a lead lsq_tasks holds (the one sent last wins), and each
lead's record of fetches and changes."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection, Engine

from lsq_sync.store.db import chunks
from lsq_sync.store.models import lead_state
from lsq_sync.store.upsert import insert_ignore_statement

KEEP_GAPS = 32  # the most recent gaps that ended in a change, per lead


@dataclass(frozen=True)
class Prior:
    """A lead's row as it was before this write."""

    fetched_at: datetime | None
    fetches: int
    changes: int
    quiet_s: float
    change_gaps: list[float]
    tasks: int = 0


def claim(conn: Connection, sent: Mapping[str, datetime]) -> dict[str, Prior]:
    """Lock the rows of the leads in `sent` (lead id -> when its fetch was sent) in the
    caller's transaction, and return the prior state of those whose fetch is newer than
    the one stored: only they may write. A fetch sent earlier than the stored one lost
    the race to it, whatever the order they finished in."""
    ids = sorted(sent)  # one order for every writer: fewer deadlocks
    if not ids:
        return {}
    conn.execute(insert_ignore_statement(conn, lead_state), [{"lead_id": i} for i in ids])
    won: dict[str, Prior] = {}
    for part in chunks(ids):
        rows = conn.execute(select(lead_state).where(lead_state.c.lead_id.in_(part))
                            .order_by(lead_state.c.lead_id).with_for_update())
        for row in rows:
            if row.fetched_at is None or row.fetched_at < sent[row.lead_id]:
                won[row.lead_id] = Prior(row.fetched_at, row.fetches, row.changes,
                                         row.quiet_s, _gaps(row.change_gaps))
    return won


def record(conn: Connection, won: Mapping[str, Prior], sent: Mapping[str, datetime],
           changed: Iterable[str], tasks: Mapping[str, int]) -> None:
    """Store each winning fetch: its send time, and whether it found a change since the
    previous one (the gap between them goes to quiet_s or to change_gaps)."""
    changed = set(changed)
    params: list[dict[str, Any]] = []
    for lead_id, prior in won.items():
        at = sent[lead_id]
        gaps, quiet, changes = prior.change_gaps, prior.quiet_s, prior.changes
        if prior.fetched_at is not None:  # a first fetch finds everything new: no evidence
            gap = max(0.0, (at - prior.fetched_at).total_seconds())
            if lead_id in changed:
                gaps = [*gaps, round(gap, 3)][-KEEP_GAPS:]
                changes += 1
            else:
                quiet += gap
        params.append({"b_lead": lead_id, "b_at": at, "b_fetches": prior.fetches + 1,
                       "b_changes": changes, "b_quiet": quiet,
                       "b_gaps": json.dumps(gaps) if gaps else None,
                       "b_tasks": tasks.get(lead_id, 0),
                       "b_changed_at": at if lead_id in changed else None})
    plain = [p for p in params if p["b_changed_at"] is None]
    found = [p for p in params if p["b_changed_at"] is not None]
    values: dict[str, Any] = {"fetched_at": bindparam("b_at"), "fetches": bindparam("b_fetches"),
              "changes": bindparam("b_changes"), "quiet_s": bindparam("b_quiet"),
              "change_gaps": bindparam("b_gaps"), "tasks": bindparam("b_tasks")}
    where = lead_state.c.lead_id == bindparam("b_lead")
    if plain:
        conn.execute(update(lead_state).where(where).values(**values), plain)
    if found:
        conn.execute(update(lead_state).where(where)
                     .values(**values, changed_at=bindparam("b_changed_at")), found)


def everything(engine: Engine) -> dict[str, Prior]:
    """Every lead's record (the freshest strategy's input), with its task count."""
    with engine.connect() as conn:
        return {row.lead_id: Prior(row.fetched_at, row.fetches, row.changes, row.quiet_s,
                                   _gaps(row.change_gaps), row.tasks)
                for row in conn.execute(select(lead_state))}


def _gaps(text: str | None) -> list[float]:
    if not text:
        return []
    try:
        value = json.loads(text)
    except ValueError:  # a row written by hand: start its record again
        return []
    return [float(g) for g in value if isinstance(g, int | float)] if isinstance(value, list) \
        else []
