"""One pull and one push at a time per database: leased locks, heartbeats, dead runs."""

from __future__ import annotations

import os
import threading
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import delete, or_, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from lsq_sync.errors import LockedError, StoreError
from lsq_sync.store import runs
from lsq_sync.store.db import chunks, describe, retry_conflicts
from lsq_sync.store.models import edit_claims, locks
from lsq_sync.store.types import utcnow
from lsq_sync.store.upsert import insert_ignore_statement

if TYPE_CHECKING:
    from lsq_sync.logs import Logger

HOST = runs.HOST

LEASE = timedelta(seconds=60)
HEARTBEAT_S = 10.0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_dead(pid: int | None, host: str | None, heartbeat: datetime | None,
            now: datetime) -> bool:
    """A holder is dead when its process is gone from this host, or its lease ran out."""
    if host == HOST and pid is not None and pid != os.getpid() and not pid_alive(pid):
        return True
    return heartbeat is None or now - heartbeat > LEASE


def reap(engine: Engine) -> list[int]:
    """Mark runs left `running` by processes that died as failed; returns their ids."""
    return runs.reap(engine, is_dead)


def acquire(engine: Engine, name: str, run_id: int) -> None:
    """Take the `name` lock for `run_id`, or raise LockedError naming the holder."""
    now = utcnow()
    try:
        with engine.begin() as conn:
            held = conn.execute(select(locks).where(locks.c.name == name)).first()
            if held is not None and is_dead(held.pid, held.host, held.expires_at - LEASE, now):
                conn.execute(delete(locks).where(locks.c.name == name,
                                                 locks.c.run_id == held.run_id))
            conn.execute(insert_ignore_statement(conn, locks), [{
                "name": name, "run_id": run_id, "pid": os.getpid(), "host": HOST,
                "acquired_at": now, "expires_at": now + LEASE}])
            holder = conn.execute(select(locks).where(locks.c.name == name)).one()
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot take the {name} lock: {describe(exc)}") from None
    if holder.run_id != run_id:
        started = holder.acquired_at.strftime("%Y-%m-%d %H:%M:%S")
        raise LockedError(
            f"another {name} is running: run {holder.run_id}, started {started} UTC, pid "
            f"{holder.pid} on {holder.host}; this one exits without doing anything")


def release(engine: Engine, run_id: int) -> None:
    with engine.begin() as conn:
        release_all(conn, run_id)


def release_all(conn: Connection, run_id: int) -> None:
    """Every lock the run holds, in the caller's transaction."""
    conn.execute(delete(locks).where(locks.c.run_id == run_id))


class Heartbeat:
    """Renews the run's locks and heartbeat_at every few seconds from its own thread."""

    def __init__(self, engine: Engine, run_id: int, log: Logger,
                 every_s: float = HEARTBEAT_S) -> None:
        self.engine = engine
        self.run_id = run_id
        self.log = log
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lsq-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def beat(self) -> None:
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(update(locks).where(locks.c.run_id == self.run_id)
                         .values(expires_at=now + LEASE))
            runs.heartbeat(conn, self.run_id, now)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.beat()
            except SQLAlchemyError as exc:  # the run itself will meet the same problem
                self.log.warning("heartbeat_failed", error=describe(exc))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# -- edit claims: a push holds the tasks whose edits it is sending ------------------------

CLAIM = timedelta(minutes=10)


def claim_tasks(engine: Engine, run_id: int, task_ids: list[str],
                lease: timedelta = CLAIM) -> list[str]:
    """Take the tasks no live run holds; returns the ones this run now holds."""
    def take() -> set[str]:
        now = utcnow()
        with engine.begin() as conn:
            # The lapsed claims are found first and deleted by key: a DELETE by range
            # would lock every row it scans, and two claims at once would deadlock.
            lapsed_ = or_(edit_claims.c.claimed_until < now,
                          edit_claims.c.run_id.in_(runs.finished()))
            lapsed = conn.execute(select(edit_claims.c.task_id).where(
                edit_claims.c.task_id.in_(task_ids), lapsed_)).scalars().all()
            if lapsed:
                conn.execute(delete(edit_claims).where(
                    edit_claims.c.task_id.in_(lapsed), lapsed_))
            conn.execute(insert_ignore_statement(conn, edit_claims), [
                {"task_id": t, "run_id": run_id, "claimed_until": now + lease}
                for t in task_ids])
            return set(conn.execute(select(edit_claims.c.task_id).where(
                edit_claims.c.run_id == run_id,
                edit_claims.c.task_id.in_(task_ids))).scalars())

    if not task_ids:
        return []
    held = retry_conflicts(take)
    return [t for t in task_ids if t in held]


def release_tasks(conn: Connection, run_id: int, task_id: str | None = None) -> None:
    """Give back one claimed task, or (without `task_id`) every one the run holds."""
    if task_id is not None:
        conn.execute(delete(edit_claims).where(edit_claims.c.run_id == run_id,
                                               edit_claims.c.task_id == task_id))
        return
    # By key, as in claim_tasks(): a DELETE by run_id would lock the rows of every run.
    held = conn.execute(select(edit_claims.c.task_id)
                        .where(edit_claims.c.run_id == run_id)).scalars().all()
    for some in chunks(held):
        conn.execute(delete(edit_claims).where(edit_claims.c.run_id == run_id,
                                               edit_claims.c.task_id.in_(some)))


__all__ = ["Heartbeat", "acquire", "claim_tasks", "reap", "release", "release_tasks"]
