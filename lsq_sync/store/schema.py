"""Create, migrate and check the schema through the alembic scripts in migrations/."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from lsq_sync.errors import SchemaError, StoreError
from lsq_sync.store.db import describe, safe_url

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

# alembic itself is imported only to migrate: every other command checks the revision
# with one SELECT and the scripts' own lines (importing alembic costs each run 50 ms).
_REVISION = re.compile(r'^(down_revision|revision)\b[^=]*=\s*(?:"([^"]*)"|None)', re.M)

UPGRADE_HINT = "run `lsq-sync db upgrade`"
VERSION_TABLE = "lsq_sync_alembic_version"
LEGACY_VERSION_TABLE = "alembic_version"  # where lsq-sync before 0.2 kept its revision


def migrations_dir() -> Path:
    """lsq_sync/migrations, in a source checkout and in an installed wheel alike."""
    candidate = Path(__file__).resolve().parent.parent / "migrations"
    if (candidate / "env.py").is_file():
        return candidate
    raise SchemaError("the alembic migrations are missing from this installation; "
                      "reinstall lsq-sync")


def alembic_config(engine: Engine | None = None, version_table: str = VERSION_TABLE
                   ) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(migrations_dir()))
    if engine is not None:
        cfg.attributes["engine"] = engine
    cfg.attributes["version_table"] = version_table
    return cfg


@cache
def _chain() -> tuple[str, ...]:
    """The revisions of migrations/versions, oldest first, read from the scripts' lines."""
    parents: dict[str, str | None] = {}
    for script in sorted((migrations_dir() / "versions").glob("*.py")):
        found = dict((m[0], m[1] or None) for m in _REVISION.findall(script.read_text()))
        if found.get("revision"):
            parents[str(found["revision"])] = found.get("down_revision")
    chain: list[str] = []
    while len(chain) < len(parents):
        after = chain[-1] if chain else None
        nxt = [rev for rev, parent in parents.items() if parent == after]
        if len(nxt) != 1:
            raise SchemaError("the migrations of this installation do not form one line; "
                              "reinstall lsq-sync")
        chain.append(nxt[0])
    return tuple(chain)


def _known() -> set[str]:
    return set(_chain())


def _revision(conn: Connection, table: str) -> str | None:
    if not inspect(conn).has_table(table):
        return None
    rows = conn.execute(text(f"SELECT version_num FROM {table}")).scalars().all()
    return str(rows[0]) if len(rows) == 1 else None


def legacy_revision(engine: Engine) -> str | None:
    """The revision an older lsq-sync recorded in `alembic_version`, if that is where this
    database's lsq-sync schema is recorded (our revision there, and our tables present);
    None when that table is another application's or absent."""
    with engine.connect() as conn:
        names = set(inspect(conn).get_table_names())
        if VERSION_TABLE in names or LEGACY_VERSION_TABLE not in names \
                or "lsq_sync_runs" not in names:
            return None
        rows = conn.execute(text(f"SELECT version_num FROM {LEGACY_VERSION_TABLE}")
                            ).scalars().all()
    ours = [r for r in rows if r in _known()]
    return ours[0] if ours else None


def _adopt_legacy(engine: Engine) -> str | None:
    """Move an older lsq-sync's revision from alembic_version to our own table, leaving
    any other application's rows (and the table, if they remain) as they were."""
    rev = legacy_revision(engine)
    if rev is None:
        return None
    from alembic import command
    command.stamp(alembic_config(engine), rev)
    with engine.begin() as conn:
        conn.execute(text(f"DELETE FROM {LEGACY_VERSION_TABLE} WHERE version_num = :rev"),
                     {"rev": rev})
        left = conn.execute(text(f"SELECT COUNT(*) FROM {LEGACY_VERSION_TABLE}")).scalar_one()
    if not left:
        with engine.begin() as conn:
            conn.execute(text(f"DROP TABLE {LEGACY_VERSION_TABLE}"))
    return rev


def head() -> str:
    chain = _chain()
    if not chain:
        raise SchemaError("no migrations found; reinstall lsq-sync")
    return chain[-1]


def current(engine: Engine) -> str | None:
    try:
        with engine.connect() as conn:
            return _revision(conn, VERSION_TABLE)
    except SQLAlchemyError as exc:
        raise StoreError(
            f"cannot read the schema revision of {safe_url(engine.url)}: {describe(exc)}"
        ) from None


def upgrade(engine: Engine, revision: str = "head", *,
            version_table: str = VERSION_TABLE) -> tuple[str | None, str]:
    """Migrate to `revision`; returns (before, after). A schema an older lsq-sync recorded
    in `alembic_version` moves to lsq_sync_alembic_version first, nothing else changed."""
    from alembic import command
    from alembic.util import CommandError
    try:
        legacy = _adopt_legacy(engine) if version_table == VERSION_TABLE else None
        with engine.connect() as conn:
            before = legacy or _revision(conn, version_table)
        command.upgrade(alembic_config(engine, version_table), revision)
        with engine.connect() as conn:
            after = _revision(conn, version_table)
    except SQLAlchemyError as exc:
        raise StoreError(f"migration failed on {safe_url(engine.url)}: {describe(exc)}") from None
    except CommandError as exc:
        raise SchemaError(f"cannot migrate {safe_url(engine.url)}: {exc}") from None
    return before, after or ""


def require_current(engine: Engine) -> None:
    """Refuse to work on a missing, old or unknown schema."""
    rev = current(engine)
    want = head()
    if rev == want:
        return
    where = safe_url(engine.url)
    if rev is None:
        if legacy_revision(engine) is not None:
            raise SchemaError(f"the lsq-sync schema of {where} is recorded the old way (in "
                              f"alembic_version); {UPGRADE_HINT} to move it to "
                              f"{VERSION_TABLE} and migrate it")
        raise SchemaError(f"the database {where} has no lsq-sync schema; {UPGRADE_HINT}")
    if rev in _known():
        raise SchemaError(
            f"the schema of {where} is at revision {rev}, this version needs {want}; "
            f"{UPGRADE_HINT}"
        )
    raise SchemaError(
        f"the schema of {where} is at revision {rev}, which this version of lsq-sync does "
        f"not know: it was migrated by a newer lsq-sync; upgrade lsq-sync"
    )
