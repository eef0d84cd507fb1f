"""One pull and one push at a time per database: leased locks, heartbeats, dead runs."""

from __future__ import annotations

import os
import socket
import threading
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from lsq_sync.db import describe
from lsq_sync.errors import LockedError, StoreError
from lsq_sync.models import locks, sync_runs
from lsq_sync.states import RunStatus
from lsq_sync.types import utcnow
from lsq_sync.upsert import insert_ignore_statement

if TYPE_CHECKING:
    from lsq_sync.logs import Logger

HOST = socket.gethostname()[:255]  # recorded with every run and lock

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
    now = utcnow()
    reaped = []
    with engine.begin() as conn:
        rows = conn.execute(select(sync_runs.c.id, sync_runs.c.pid, sync_runs.c.host,
                                   sync_runs.c.heartbeat_at)
                            .where(sync_runs.c.status == RunStatus.RUNNING)).all()
        for row in rows:
            if row.pid == os.getpid() and row.host == HOST:
                continue
            if is_dead(row.pid, row.host, row.heartbeat_at, now):
                seen = row.heartbeat_at.strftime("%Y-%m-%d %H:%M:%S") if row.heartbeat_at \
                    else "never"
                conn.execute(update(sync_runs).where(
                    sync_runs.c.id == row.id, sync_runs.c.status == RunStatus.RUNNING).values(
                    status=RunStatus.FAILED, finished_at=now,
                    error=f"abandoned: pid {row.pid} on {row.host} stopped without finishing "
                          f"(last heartbeat {seen} UTC)"))
                reaped.append(row.id)
    return reaped


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
            conn.execute(update(sync_runs).where(sync_runs.c.id == self.run_id)
                         .values(heartbeat_at=now))

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.beat()
            except SQLAlchemyError as exc:  # the run itself will meet the same problem
                self.log.warning("heartbeat_failed", error=describe(exc))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


__all__ = ["Heartbeat", "acquire", "reap", "release"]
