"""The worklist of a pull: the lead ids it works through (lsq_run_leads), staged from the
leads query, carried over from an unfinished pass, marked as they are done, and retried."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, case, delete, func, insert, literal, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from lsq_sync.errors import StoreError
from lsq_sync.states import Command, LeadState
from lsq_sync.store import runs
from lsq_sync.store.db import chunks, describe
from lsq_sync.store.leads import check_lead_id
from lsq_sync.store.models import failed_leads, run_leads, sync_runs
from lsq_sync.store.upsert import insert_ignore_statement

KEEP_FAILED_LEADS_OF = 100  # runs
KEPT_STATES = (LeadState.FAILED, LeadState.PARTIAL)  # lead rows kept after a run, for `runs show`


@dataclass
class Staged:
    total: int = 0
    skipped: int = 0
    duplicates: int = 0
    last_seq: int = 0
    cut: bool = False  # a stop ended it before the query's end


def stage(engine: Engine, run_id: int, batches: Iterable[list[Any]], *,
          limit: int | None = None, on_skip: Any = None, start: int = 0,
          stop: threading.Event | None = None) -> Staged:
    """Copy valid, unique lead ids into lsq_run_leads for `run_id`, in query order,
    numbered after `start` (the leads carried over from an unfinished run)."""
    staged = Staged()
    seq = start
    try:
        with engine.connect() as conn:
            carried = int(conn.execute(select(func.count()).select_from(run_leads)
                                       .where(run_leads.c.run_id == run_id)).scalar_one())
        for raw_batch in batches:
            if stop is not None and stop.is_set():
                staged.cut = True  # the next run stages the query again; the unique key
                break              # drops repeats
            rows = []
            for value in raw_batch:
                lead_id, why = check_lead_id(value)
                if lead_id is None:
                    staged.skipped += 1
                    if on_skip is not None:
                        on_skip(value, why)
                    continue
                seq += 1
                rows.append({"run_id": run_id, "seq": seq, "lead_id": lead_id})
                if limit is not None and seq >= limit:
                    break
            if rows:
                with engine.begin() as conn:
                    conn.execute(insert_ignore_statement(conn, run_leads), rows)
            if limit is not None and seq >= limit:
                break
        with engine.connect() as conn:
            staged.total = int(conn.execute(select(func.count()).select_from(run_leads)
                                            .where(run_leads.c.run_id == run_id)).scalar_one())
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot stage lead ids: {describe(exc)}") from None
    # Query ids that matched rows carried over from an unfinished run are not duplicates
    # (exact while the query returns what it did then).
    inserted = staged.total - carried
    staged.duplicates = max(0, (seq - start) - inserted - carried)
    staged.last_seq = seq
    return staged


def unfinished_run(engine: Engine, current: int) -> int | None:
    """The newest finished run of a pass that left leads to do (killed, stopped, capped).
    Runs with --lead-id or --limit are no pass: what they left is not resumed."""
    with engine.connect() as conn:
        value = conn.execute(
            select(func.max(run_leads.c.run_id)).where(
                run_leads.c.state == LeadState.TODO, run_leads.c.run_id != current,
                run_leads.c.run_id.in_(runs.finished(
                    sync_runs.c.pass_started_at.is_not(None),
                    sync_runs.c.command.in_([c for c in Command if c.pulls]))))).scalar()
    return None if value is None else int(value)


def carry_over(engine: Engine, previous: int, current: int, retry_below: int = 0
               ) -> tuple[int, int]:
    """Give `current` the lead list of `previous`: what it left to do stays to do (first),
    what it or the runs it continued already did is marked `done`, so that staging the
    query skips it; but a lead that failed (fewer than `retry_below` times in a row) is to
    do again. Returns (last seq used, leads marked done)."""
    state = case((run_leads.c.state == LeadState.TODO, literal(LeadState.TODO.value)),
                 else_=literal(LeadState.DONE.value))
    with engine.begin() as conn:
        conn.execute(insert(run_leads).from_select(
            ["run_id", "seq", "lead_id", "state"],
            select(literal(current), run_leads.c.seq, run_leads.c.lead_id, state)
            .where(run_leads.c.run_id == previous)))
        conn.execute(delete(run_leads).where(run_leads.c.run_id == previous,
                                             run_leads.c.state.not_in(KEPT_STATES)))
        conn.execute(update(run_leads).where(
            run_leads.c.run_id == current, run_leads.c.state == LeadState.DONE,
            run_leads.c.lead_id.in_(select(failed_leads.c.lead_id).where(
                failed_leads.c.failures < retry_below))).values(state=LeadState.TODO))
        last = conn.execute(select(func.max(run_leads.c.seq))
                            .where(run_leads.c.run_id == current)).scalar()
        done = conn.execute(select(func.count()).select_from(run_leads).where(
            run_leads.c.run_id == current, run_leads.c.state == LeadState.DONE)).scalar_one()
    return int(last or 0), int(done)


def to_retry(engine: Engine, bound: int) -> list[str]:
    """Leads whose last fetch failed fewer than `bound` times in a row: a pass tries them
    first, whether or not its query still returns them."""
    with engine.connect() as conn:
        return list(conn.execute(select(failed_leads.c.lead_id)
                                 .where(failed_leads.c.failures < bound)
                                 .order_by(failed_leads.c.last_failed_at)).scalars())


def count_todo(engine: Engine, run_id: int) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(run_leads).where(
            run_leads.c.run_id == run_id, run_leads.c.state == LeadState.TODO)).scalar_one())


def forget_unfinished(engine: Engine, current: int) -> int:
    """pull --restart: drop what unfinished runs left to do."""
    with engine.begin() as conn:
        return int(conn.execute(delete(run_leads).where(
            run_leads.c.run_id != current, run_leads.c.state.not_in(KEPT_STATES),
            run_leads.c.run_id.in_(runs.finished()))).rowcount or 0)


def pending(engine: Engine, run_id: int, page: int = 1000) -> Iterator[tuple[int, str]]:
    """The run's leads still to do, in order, read page by page."""
    after = 0
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                select(run_leads.c.seq, run_leads.c.lead_id)
                .where(run_leads.c.run_id == run_id, run_leads.c.state == LeadState.TODO,
                       run_leads.c.seq > after)
                .order_by(run_leads.c.seq).limit(page)).all()
        if not rows:
            return
        yield from rows
        after = rows[-1][0]


def mark(conn: Connection, run_id: int, *, ok: Sequence[int],
         problems: dict[int, tuple[LeadState, str]]) -> None:
    """Mark this run's leads done: `ok` ones, and the others as (state, why) says (failed,
    or partial when bad tasks were skipped), in the caller's transaction."""
    for part in chunks(ok):
        conn.execute(update(run_leads)
                     .where(run_leads.c.run_id == bindparam("r"), run_leads.c.seq.in_(part))
                     .values(state=LeadState.OK), {"r": run_id})
    for seq, (state, why) in problems.items():
        conn.execute(update(run_leads).where(run_leads.c.run_id == run_id, run_leads.c.seq == seq)
                     .values(state=state, error=why[:1000]))


def close(conn: Connection, run_id: int, *, keep: bool) -> None:
    """A run ends: its lead list goes, but for the failed and partial leads (for `runs
    show`), unless `keep`: a run that stopped early leaves it for the next pull."""
    if not keep:
        conn.execute(delete(run_leads).where(run_leads.c.run_id == run_id,
                                             run_leads.c.state.not_in(KEPT_STATES)))


def clear(engine: Engine, run_id: int) -> None:
    """Forget the run's whole lead list (listen's run starts each round afresh)."""
    with engine.begin() as conn:
        conn.execute(delete(run_leads).where(run_leads.c.run_id == run_id))


def prune(engine: Engine) -> None:
    """Forget the failed-lead lists of old finished runs."""
    with engine.begin() as conn:
        newest = conn.execute(select(func.max(sync_runs.c.id))).scalar()
        if newest is None:
            return
        old = runs.finished(sync_runs.c.id < newest - KEEP_FAILED_LEADS_OF)
        conn.execute(delete(run_leads).where(run_leads.c.run_id.in_(old),
                                             run_leads.c.state.in_(KEPT_STATES)))


def failed(engine: Engine, run_id: int, limit: int = 1000,
           state: LeadState = LeadState.FAILED) -> list[dict[str, Any]]:
    """The run's leads in `state` (failed; partial: done with bad tasks skipped), with why;
    failed ones also say how many fetches in a row have failed (retried up to
    pull.MAX_LEAD_RETRIES)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(run_leads.c.lead_id, run_leads.c.error, failed_leads.c.failures)
            .select_from(run_leads.outerjoin(
                failed_leads, failed_leads.c.lead_id == run_leads.c.lead_id))
            .where(run_leads.c.run_id == run_id, run_leads.c.state == state)
            .order_by(run_leads.c.seq).limit(limit))
        return [dict(r._mapping) for r in rows]
