"""Alembic environment: runs on the engine lsq-sync hands over, or on $LSQ_SYNC_DATABASE_URL."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy.engine import Connection

from lsq_sync.store.db import make_engine
from lsq_sync.store.ddl import repair_batch_copies
from lsq_sync.store.models import metadata
from lsq_sync.store.schema import VERSION_TABLE

config = context.config


def _ours(name: str | None, type_: str, _parent: object) -> bool:
    """`alembic check` compares lsq-sync's tables only, not a neighbour application's."""
    return type_ != "table" or name is None or name in metadata.tables


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        # Our own, so that a database shared with an alembic-managed application works.
        version_table=config.attributes.get("version_table", VERSION_TABLE),
        include_name=_ours,
    )
    with context.begin_transaction():
        repair_batch_copies(connection)  # what an upgrade killed under an older lsq-sync left
        context.run_migrations()


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    if engine is None:
        url = config.get_main_option("sqlalchemy.url") or os.environ.get("LSQ_SYNC_DATABASE_URL")
        if not url:
            raise SystemExit("set LSQ_SYNC_DATABASE_URL or use `lsq-sync db upgrade`")
        engine = make_engine(url)
    with engine.connect() as connection:
        _run(connection)
        connection.commit()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; use `lsq-sync db upgrade`")
run_migrations_online()
