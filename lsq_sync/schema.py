"""Create, migrate and check the schema through the alembic scripts in migrations/."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from lsq_sync.db import describe, safe_url
from lsq_sync.errors import SchemaError, StoreError

UPGRADE_HINT = "run `lsq-sync db upgrade`"


def migrations_dir() -> Path:
    """Inside an installed wheel, or at the root of a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "migrations", here.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise SchemaError("the alembic migrations are missing from this installation; "
                      "reinstall lsq-sync")


def alembic_config(engine: Engine | None = None) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(migrations_dir()))
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


def head() -> str:
    rev = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if rev is None:
        raise SchemaError("no migrations found; reinstall lsq-sync")
    return rev


def current(engine: Engine) -> str | None:
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except SQLAlchemyError as exc:
        raise StoreError(
            f"cannot read the schema revision of {safe_url(engine.url)}: {describe(exc)}"
        ) from None


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Migrate to `revision`; returns (before, after)."""
    before = current(engine)
    try:
        command.upgrade(alembic_config(engine), revision)
    except SQLAlchemyError as exc:
        raise StoreError(f"migration failed on {safe_url(engine.url)}: {describe(exc)}") from None
    after = current(engine)
    return before, after or ""


def require_current(engine: Engine) -> None:
    """Refuse to work on a missing, old or unknown schema."""
    rev = current(engine)
    want = head()
    if rev == want:
        return
    where = safe_url(engine.url)
    if rev is None:
        raise SchemaError(f"the database {where} has no lsq-sync schema; {UPGRADE_HINT}")
    known = {s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    if rev in known:
        raise SchemaError(
            f"the schema of {where} is at revision {rev}, this version needs {want}; "
            f"{UPGRADE_HINT}"
        )
    raise SchemaError(
        f"the schema of {where} is at revision {rev}, which this version of lsq-sync does "
        f"not know: it was migrated by a newer lsq-sync; upgrade lsq-sync"
    )
