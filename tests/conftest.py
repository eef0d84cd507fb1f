"""Shared fixtures: migrated databases on every configured dialect, and the simulator."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from lsq_sync import config
from lsq_sync.store import db, schema
from lsq_sync.testing import Faults, SimConfig, Simulator

from .helpers import settings_for

# Server URLs (without a database name) enable the PostgreSQL and MariaDB variants of
# every database test; .ci/run sets both.
SERVER_URLS = {
    "postgresql": os.environ.get("LSQ_TEST_POSTGRES_URL", ""),
    "mysql": os.environ.get("LSQ_TEST_MYSQL_URL", ""),
}
ENABLE_HINT = {
    "postgresql": "set LSQ_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432 to run it",
    "mysql": "set LSQ_TEST_MYSQL_URL=mysql://root@127.0.0.1:3306 to run it",
}


def _throwaway(dialect: str, template: str | None = None) -> Iterator[str]:
    server = SERVER_URLS[dialect]
    if not server:
        pytest.skip(f"{dialect} tests are off: {ENABLE_HINT[dialect]}")
    name = f"lsq_test_{uuid.uuid4().hex[:12]}"
    admin_url = db.normalize_url(server)
    if dialect == "postgresql":
        admin_url = admin_url.set(database="postgres")
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        extra = " CHARACTER SET utf8mb4 COLLATE utf8mb4_bin" if dialect == "mysql" else ""
        if template is not None:
            extra = f" TEMPLATE {template}"
        conn.execute(text(f"CREATE DATABASE {name}{extra}"))
    try:
        yield db.normalize_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            if dialect == "postgresql":
                conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            else:
                conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """A URL to an empty database of each dialect (others skip unless configured)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tasks.db'}"
    else:
        yield from _throwaway(request.param)


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    return f"sqlite:///{tmp_path / 'tasks.db'}"


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str | None]:
    """A PostgreSQL database migrated to head once per test process, which every migrated
    PostgreSQL database of a test copies (CREATE DATABASE ... TEMPLATE): a copy takes a
    fraction of a migration. None while PostgreSQL tests are off."""
    if not SERVER_URLS["postgresql"]:
        yield None
        return
    made = _throwaway("postgresql")
    url = next(made)
    engine = db.make_engine(url)
    schema.upgrade(engine)
    engine.dispose()  # a template must have no connections when it is copied
    yield make_url(url).database
    made.close()


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """A database of each dialect, migrated to head through alembic (PostgreSQL's copied
    from a migrated template)."""
    if request.param == "postgresql":
        yield from _throwaway("postgresql", request.getfixturevalue("pg_template"))
        return
    url = f"sqlite:///{tmp_path / 'tasks.db'}" if request.param == "sqlite" else None
    made = None
    if url is None:
        made = _throwaway(request.param)
        url = next(made)
    engine = db.make_engine(url)
    schema.upgrade(engine)
    engine.dispose()
    yield url
    if made is not None:
        made.close()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = db.make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def make_sim() -> Iterator[Callable[..., Simulator]]:
    """Start simulators with any settings; all are stopped at the end of the test."""
    started: list[Simulator] = []

    def start(leads: int = 40, rate_calls: int = 0, rate_period_s: float = 1.0,
              faults: Faults | None = None, **kwargs: Any) -> Simulator:
        sim = Simulator(SimConfig(leads=leads, rate_calls=rate_calls,
                                  rate_period_s=rate_period_s, faults=faults or Faults(),
                                  **kwargs)).start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


@pytest.fixture
def sim(make_sim: Callable[..., Simulator]) -> Simulator:
    return make_sim()


@pytest.fixture
def make_config() -> Callable[..., config.Config]:
    def build(sim: Simulator, database_url: str, **lsq: Any) -> config.Config:
        return config.from_mapping(settings_for(sim, database_url, **lsq), env={})
    return build


@pytest.fixture(autouse=True)
def _restore_signal_handlers() -> Iterator[None]:
    """CLI tests install lsq-sync's SIGINT/SIGTERM handlers in this process: put pytest's
    back, so that Ctrl-C still stops the test run."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.fixture(autouse=True)
def _clean_log_context() -> Iterator[None]:
    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests first: the workers start on them, and the many short ones fill in
    behind, instead of a long one starting last and holding the run's end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
