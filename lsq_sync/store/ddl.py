"""Migration steps that are safe to run again: each one first looks whether it was done.

MariaDB/MySQL commit every DDL statement at once, and SQLite's driver commits DDL outside
a transaction, so an upgrade killed half-way leaves some steps of a revision done and the
revision unrecorded; `db upgrade` then runs the whole revision again. PostgreSQL rolls a
killed upgrade back whole, where these checks simply find nothing done.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.engine import Connection

BATCH_TMP = "_alembic_tmp_"  # the copy alembic's SQLite batch mode builds, then renames


def _inspect() -> sa.Inspector:
    return sa.inspect(op.get_bind())  # a new inspector: no cached answers from before a step


def create_table(name: str, *items: Any) -> None:
    if not _inspect().has_table(name):
        op.create_table(name, *items)


def create_index(name: str, table: str, columns: list[str]) -> None:
    if name not in {ix["name"] for ix in _inspect().get_indexes(table)}:
        op.create_index(name, table, columns)


def add_column(table: str, column: sa.Column[Any]) -> None:
    """ALTER TABLE ... ADD COLUMN (no table copy, on SQLite too), unless it is there."""
    if column.name not in {c["name"] for c in _inspect().get_columns(table)}:
        op.add_column(table, column)


def create_view(name: str, select: str) -> None:
    if name not in _inspect().get_view_names():
        op.execute(f"CREATE VIEW {name} AS {select}")


def repair_batch_copies(conn: Connection) -> list[str]:
    """SQLite: finish or undo the table copies of a batch migration that was killed (by an
    lsq-sync before the steps above). The copy is filled before the original is dropped:
    with the original gone, the copy is the table; with both there, the original is.
    Returns what was done, for the log."""
    if conn.dialect.name != "sqlite":
        return []
    done = []
    names = set(sa.inspect(conn).get_table_names())
    for tmp in sorted(n for n in names if n.startswith(BATCH_TMP)):
        table = tmp[len(BATCH_TMP):]
        if table in names:
            conn.exec_driver_sql(f'DROP TABLE "{tmp}"')
            done.append(f"dropped the unfinished copy {tmp}")
        else:
            conn.exec_driver_sql(f'ALTER TABLE "{tmp}" RENAME TO "{table}"')
            done.append(f"renamed the finished copy {tmp} to {table}")
    return done
