"""Migrations: create, report, refuse stale schemas, and agree with the models."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from typing import Any

import pytest
from alembic import command
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

from lsq_sync.errors import SchemaError, StoreError
from lsq_sync.store import db, schema
from lsq_sync.store.models import metadata


def test_upgrade_creates_every_table_and_is_idempotent(empty_db_url: str) -> None:
    engine = db.make_engine(empty_db_url)
    assert schema.current(engine) is None
    before, after = schema.upgrade(engine)
    assert before is None and after == schema.head()
    assert schema.upgrade(engine) == (after, after)
    names = set(inspect(engine).get_table_names())
    assert set(metadata.tables) <= names
    schema.require_current(engine)
    engine.dispose()


def test_models_and_migrations_agree(db_url: str) -> None:
    engine = db.make_engine(db_url)
    command.check(schema.alembic_config(engine))  # raises if autogenerate finds a diff
    engine.dispose()


def test_the_revisions_read_from_the_scripts_are_alembics() -> None:
    """Commands other than `db upgrade` check the schema without importing alembic: the
    chain they read off the scripts' lines is the one alembic walks."""
    from alembic.script import ScriptDirectory
    scripts = ScriptDirectory.from_config(schema.alembic_config())
    assert schema.head() == scripts.get_current_head()
    assert list(schema._chain()) == [s.revision for s in scripts.walk_revisions()][::-1]


def test_a_run_does_not_import_alembic_or_other_dialects(tmp_path: Any) -> None:
    """A run's fixed cost: alembic and the dialects not in use stay unimported."""
    url = f"sqlite:///{tmp_path / 'x.db'}"
    schema.upgrade(db.make_engine(url))
    code = ("import sys; from lsq_sync.store import db, schema, tasks;"
            f"schema.require_current(db.make_engine({url!r}));"
            "print(sorted({m.split('.')[2] if m.startswith('sqlalchemy.dialects.') else 'alembic'"
            " for m in sys.modules if m.startswith(('alembic', 'sqlalchemy.dialects.'))"
            " and not m.startswith('sqlalchemy.dialects._')}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "['sqlite']"


def test_a_missing_schema_is_refused_with_the_fix(empty_db_url: str) -> None:
    engine = db.make_engine(empty_db_url)
    with pytest.raises(SchemaError, match="run `lsq-sync db upgrade`"):
        schema.require_current(engine)


def test_an_old_schema_is_refused(db_url: str) -> None:
    engine = db.make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE lsq_sync_alembic_version SET version_num = 'base0'"))
    with pytest.raises(SchemaError, match="newer lsq-sync"):
        schema.require_current(engine)


def test_an_older_known_revision_asks_for_an_upgrade(db_url: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    engine = db.make_engine(db_url)
    real = schema.head()
    monkeypatch.setattr(schema, "head", lambda: "9999")
    with pytest.raises(SchemaError, match=rf"at revision {real}, this version needs 9999.*upgrade"):
        schema.require_current(engine)


def test_upgrading_a_database_with_data_keeps_it(empty_db_url: str) -> None:
    engine = db.make_engine(empty_db_url)
    schema.upgrade(engine, "0001")
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO lsq_tasks (task_id, lead_id, name, first_seen_at, last_synced_at) "
            "VALUES ('t1', 'l1', 'kept', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"))
        conn.execute(text("INSERT INTO lsq_task_edits (task_id, name) VALUES ('t1', 'x')"))
    with pytest.raises(SchemaError, match="this version needs"):
        schema.require_current(engine)
    before, after = schema.upgrade(engine)
    assert (before, after) == ("0001", schema.head())
    schema.require_current(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT name FROM lsq_tasks")).scalar_one() == "kept"
        assert conn.execute(text("SELECT status FROM lsq_task_edits")).scalar_one() == "pending"
    engine.dispose()


def test_the_utc_default_of_edits_created_at(engine: Engine) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import select

    from lsq_sync.store.models import task_edits
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO lsq_task_edits (task_id, name) VALUES ('t', 'n')"))
        row = conn.execute(select(task_edits)).one()
    assert row.status == "pending" and row.attempts == 0
    assert abs(row.created_at - datetime.now(UTC)) < timedelta(minutes=2)


def test_unreachable_database_is_a_store_error(tmp_path: object) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path}/no/such/dir/x.db")
    with pytest.raises(StoreError, match="cannot connect to the database"):
        db.check_connection(engine)


def test_passwords_are_masked() -> None:
    assert "hunter2" not in db.safe_url("postgresql://me:hunter2@db/x")


def test_upgrading_from_0005_keeps_the_watermark_and_sets_changed_at(
        empty_db_url: str) -> None:
    from lsq_sync.store import runs
    engine = db.make_engine(empty_db_url)
    schema.upgrade(engine, "0005")
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO lsq_tasks (task_id, lead_id, name, description, first_seen_at, "
            "last_synced_at) VALUES ('t1', 'l1', 'kept', 'd', '2026-01-01 00:00:00', "
            "'2026-01-02 03:04:05')"))
        for started, status in [("2026-01-02 00:00:00", "succeeded"),
                                ("2026-01-03 00:00:00", "partial")]:
            conn.execute(text(
                "INSERT INTO lsq_sync_runs (command, started_at, status) "
                "VALUES ('pull', :s, :st)"), {"s": started, "st": status})
    schema.upgrade(engine)
    schema.require_current(engine)
    watermark = runs.last_success(engine)
    assert watermark is not None and watermark.isoformat() == "2026-01-02T00:00:00+00:00"
    with engine.connect() as conn:
        row = conn.execute(text("SELECT name, changed_at FROM lsq_tasks")).one()
        unfinished = conn.execute(text(
            "SELECT pass_started_at FROM lsq_sync_runs WHERE status = 'partial'")).scalar()
    assert row[0] == "kept" and str(row[1]).startswith("2026-01-02 03:04:05")
    assert unfinished is not None  # resumable as a pass, its query evaluated with NULL
    engine.dispose()


def test_a_database_shared_with_an_alembic_application(db_url: str, tmp_path: Any) -> None:
    """Another application's alembic_version is theirs: upgrade, check and doctor work."""
    engine = db.make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
        conn.execute(text("INSERT INTO alembic_version VALUES ('ae1027a6acf')"))
    assert schema.upgrade(engine)[1] == schema.head()
    schema.require_current(engine)
    with engine.connect() as conn:
        theirs = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    assert theirs == ["ae1027a6acf"]
    command.check(schema.alembic_config(engine))  # their table is not ours to compare
    from click.testing import CliRunner

    from lsq_sync.cli import cli
    path = tmp_path / "c.toml"
    path.write_text(f'[database]\nurl = "{db_url}"\n')
    for args, code in ((["db", "upgrade"], 0), (["db", "check"], 0), (["db", "current"], 0)):
        result = CliRunner().invoke(cli, ["--config", str(path), *args])
        assert result.exit_code == code, result.output
        assert "Traceback" not in result.output and "newer" not in result.output
    engine.dispose()


def test_an_older_install_moves_its_revision_over(empty_db_url: str, tmp_path: Any) -> None:
    engine = db.make_engine(empty_db_url)
    schema.upgrade(engine, "0005", version_table=schema.LEGACY_VERSION_TABLE)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO lsq_tasks (task_id, lead_id, name, first_seen_at, last_synced_at) "
            "VALUES ('t1', 'l1', 'kept', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"))
    with pytest.raises(SchemaError, match=r"recorded the old way.*db upgrade"):
        schema.require_current(engine)
    from click.testing import CliRunner

    from lsq_sync.cli import cli
    path = tmp_path / "c.toml"
    path.write_text(f'[database]\nurl = "{empty_db_url}"\n')
    check = CliRunner().invoke(cli, ["--config", str(path), "db", "check"])
    assert check.exit_code == 3 and "db upgrade" in check.output
    assert schema.upgrade(engine) == ("0005", schema.head())
    schema.require_current(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT name FROM lsq_tasks")).scalar_one() == "kept"
        names = set(inspect(conn).get_table_names())
    assert "alembic_version" not in names  # it held only ours
    engine.dispose()


def test_an_installed_wheel_migrates_and_writes_its_config(tmp_path: Any) -> None:
    """The migrations and the example config ship inside the wheel (CI installs the built
    wheel into a venv of its own and names its python in LSQ_TEST_WHEEL_PYTHON)."""
    import os
    import subprocess
    python = os.environ.get("LSQ_TEST_WHEEL_PYTHON", "")
    if not python:
        pytest.skip("set LSQ_TEST_WHEEL_PYTHON to the python of a venv with the built wheel "
                    "installed (.ci/run does)")
    env = {**os.environ, "LSQ_SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}",
           "LSQ_SYNC_CONFIG": ""}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([python, "-m", "lsq_sync", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120, check=False)

    where = subprocess.run([python, "-c", "import lsq_sync; print(lsq_sync.__file__)"],
                           capture_output=True, text=True, timeout=60, check=True,
                           cwd=tmp_path)
    assert "site-packages" in where.stdout  # the installed copy, not this checkout
    upgraded = run("db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"to revision {schema.head()}" in upgraded.stdout
    assert run("db", "check").returncode == 0
    init = run("init", "fresh.toml")
    assert init.returncode == 0, init.stderr
    assert "[metrics]" in (tmp_path / "fresh.toml").read_text()
    installed = __import__("pathlib").Path(where.stdout.strip()).parent
    assert (installed / "docs" / "reporting.md").is_file()  # the demo points at it
    assert (installed.parent / f"lsq_sync-{__import__('lsq_sync').__version__}.dist-info"
            / "licenses" / "LICENSE").is_file()


KILLER = """
import atexit, os, signal, sys
from sqlalchemy import event
from sqlalchemy.engine import Engine
at, how = int(sys.argv[1]), getattr(signal, sys.argv[2])
seen = [0]
@event.listens_for(Engine, "before_cursor_execute")
def count(*_args):
    seen[0] += 1
    if seen[0] == at:
        os.kill(os.getpid(), how)
atexit.register(lambda: print(f"statements={seen[0]}", file=sys.stderr))
from lsq_sync.cli import main
sys.argv = ["lsq-sync", "db", "upgrade"]
main()
"""


def upgrade_killed_at(url: str, at: int, how: str = "SIGKILL") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LSQ_SYNC_DATABASE_URL": url, "LSQ_SYNC_CONFIG": "",
           "LSQ_ACCESS_KEY": "", "LSQ_SECRET_KEY": ""}
    return subprocess.run([sys.executable, "-c", KILLER, str(at), how], env=env,
                          capture_output=True, text=True, timeout=120, cwd=os.getcwd())


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 3])
def test_an_upgrade_killed_anywhere_runs_again_to_the_same_schema(
        seed: int, empty_db_url: str) -> None:
    """MariaDB's DDL commits at once and SQLite's driver commits DDL outside transactions:
    an upgrade killed between two steps of a revision must finish when run again."""
    full = upgrade_killed_at(empty_db_url, 0)  # never killed: how many statements in all
    assert full.returncode == 0, full.stderr
    total = int(full.stderr.rsplit("statements=", 1)[1].split()[0])
    engine = db.make_engine(empty_db_url)
    # Start again from nothing: drop what the full upgrade made.
    with engine.begin() as conn:
        for view in inspect(conn).get_view_names():
            conn.execute(text(f"DROP VIEW {view}"))
    metadata.drop_all(engine)
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE {schema.VERSION_TABLE}"))
    rng = random.Random(seed)
    # Killed once anywhere, then (what is left is shorter) killed again early in the rerun.
    for how, at in (("SIGKILL", rng.randint(2, total - 1)),
                    ("SIGTERM", rng.randint(2, total // 4))):
        killed = upgrade_killed_at(empty_db_url, at, how)
        if killed.returncode == 0:  # the rerun had fewer statements left than `at`
            assert int(killed.stderr.rsplit("statements=", 1)[1].split()[0]) < at
        else:
            assert "statements=" not in killed.stderr  # died there, no clean exit
    again = upgrade_killed_at(empty_db_url, 0)
    assert again.returncode == 0, again.stderr[-2000:]
    schema.require_current(engine)
    command.check(schema.alembic_config(engine))  # every table, column and index is there
    views = set(inspect(engine).get_view_names())
    assert {"lsq_open_tasks", "lsq_overdue_tasks", "lsq_task_counts_by_owner", "lsq_clock",
            "lsq_task_reassignments"} <= views
    engine.dispose()


def test_a_batch_copy_left_by_a_killed_upgrade_is_finished_or_dropped(
        sqlite_url: str) -> None:
    from lsq_sync.store.ddl import repair_batch_copies
    engine = db.make_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE kept (x INTEGER)"))
        conn.execute(text("CREATE TABLE _alembic_tmp_kept (x INTEGER)"))    # copy unfinished
        conn.execute(text("CREATE TABLE _alembic_tmp_moved (x INTEGER)"))   # original dropped
        conn.execute(text("INSERT INTO _alembic_tmp_moved VALUES (7)"))
    with engine.begin() as conn:
        done = repair_batch_copies(conn)
    assert done == ["dropped the unfinished copy _alembic_tmp_kept",
                    "renamed the finished copy _alembic_tmp_moved to moved"]
    assert set(inspect(engine).get_table_names()) == {"kept", "moved"}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT x FROM moved")).scalar_one() == 7
    engine.dispose()
