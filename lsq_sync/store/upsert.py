"""Dialect-specific INSERT statements: skip-if-present, and bulk upserts at the driver's speed."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql.dml import Insert

from lsq_sync.store.types import UTCDateTime, json_dumps

_PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}


def is_mysql(dialect: Dialect) -> bool:
    return dialect.name in ("mysql", "mariadb")


def dialect_insert(conn: Connection, table: Table) -> Any:
    # Imported on the dialect in use only (each dialect's package costs 20 ms to import).
    name = conn.dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert
        return pg_insert(table)
    if is_mysql(conn.dialect):
        from sqlalchemy.dialects.mysql import insert as mysql_insert
        return mysql_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert
    return sqlite_insert(table)


def insert_ignore_statement(conn: Connection, table: Table) -> Insert:
    """INSERT that skips rows whose unique key already exists."""
    ins = dialect_insert(conn, table)
    if is_mysql(conn.dialect):
        stmt: Insert = ins.prefix_with("IGNORE")
        return stmt
    stmt = ins.on_conflict_do_nothing()
    return stmt


def upsert_statement(conn: Connection, table: Table, keep: Sequence[str] = ()) -> Insert:
    """INSERT ... ON CONFLICT (SQLite, PostgreSQL) or ON DUPLICATE KEY (MySQL), as SQLAlchemy
    builds it; `keep` columns keep their stored value when the row exists."""
    ins = dialect_insert(conn, table)
    update = [c.name for c in table.columns if not c.primary_key and c.name not in keep]
    if is_mysql(conn.dialect):
        stmt: Insert = ins.on_duplicate_key_update({c: ins.inserted[c] for c in update})
        return stmt
    stmt = ins.on_conflict_do_update(index_elements=list(table.primary_key.columns),
                                     set_={c: ins.excluded[c] for c in update})
    return stmt


def upsert(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]],
           keep: Sequence[str] = ()) -> None:
    """Insert `rows` (each with every column of `table`), updating those whose primary key
    exists except for their `keep` columns; `rows` must not repeat a key.

    SQLAlchemy's executemany spends more time per row than the database does (a parameter
    dict per row, named parameters the driver reorders again). Here the driver gets plain
    tuples, each value through its column type's own bind processor, so what is stored is
    what SQLAlchemy would store; every value is bound by the driver: PyMySQL's executemany
    folds the rows into multi-row statements (escaping each value itself, and keeping each
    statement under its max_stmt_length), sqlite3 steps one prepared statement, and
    PostgreSQL gets the whole batch as one JSON parameter.
    """
    if not rows:
        return
    dialect = conn.dialect
    names = [c.name for c in table.columns]
    placeholder = _PLACEHOLDERS.get(str(dialect.paramstyle))
    if placeholder is None:  # a driver with named or numbered parameters
        conn.execute(upsert_statement(conn, table, keep), list(rows))
        return
    target, tail = _statement_parts(dialect, table, names, keep)
    if dialect.name == "postgresql":
        _postgresql_upsert(conn, table, target, tail, rows)
        return
    row = "(" + ", ".join([placeholder] * len(names)) + ")"
    conn.exec_driver_sql(f"{target} VALUES {row}{tail}", driver_values(dialect, table, names, rows))


def bind_processors(dialect: Dialect, table: Table,
                    names: Sequence[str]) -> list[Callable[[Any], Any] | None]:
    """What SQLAlchemy applies to each column's values before the driver sees them."""
    return [table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names]


def driver_values(dialect: Dialect, table: Table, names: Sequence[str],
                  rows: Iterable[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
    """Each row as the tuple of values the DBAPI driver receives from SQLAlchemy."""
    pairs = list(zip(names, bind_processors(dialect, table, names), strict=True))
    return [tuple([row[name] if process is None else process(row[name])
                   for name, process in pairs]) for row in rows]


def _statement_parts(dialect: Dialect, table: Table, names: Sequence[str],
                     keep: Sequence[str]) -> tuple[str, str]:
    """`INSERT INTO t (cols)` and the conflict clause that follows the rows."""
    quote = dialect.identifier_preparer.quote
    columns = ", ".join(quote(n) for n in names)
    head = f"INSERT INTO {dialect.identifier_preparer.format_table(table)} ({columns})"
    update = [quote(c.name) for c in table.columns if not c.primary_key and c.name not in keep]
    if is_mysql(dialect):
        # VALUES(col) works on MariaDB and every MySQL (8.0.20+ deprecates it, still runs).
        return head, " ON DUPLICATE KEY UPDATE " + ", ".join(f"{c} = VALUES({c})" for c in update)
    key = ", ".join(quote(c.name) for c in table.primary_key.columns)
    return head, (f" ON CONFLICT ({key}) DO UPDATE SET "
                  + ", ".join(f"{c} = excluded.{c}" for c in update))


def _postgresql_upsert(conn: Connection, table: Table, target: str, tail: str,
                       rows: Sequence[Mapping[str, Any]]) -> None:
    """All rows in one JSON parameter that PostgreSQL turns into rows of the table's type.

    One statement per batch: planned once (the connection plans every statement afresh,
    see db.py) and parsed by the server, not per row by Python.
    """
    columns = target[target.index("(") + 1:-1]
    sql = (f"{target} SELECT {columns} FROM json_populate_recordset("
           f"NULL::{conn.dialect.identifier_preparer.format_table(table)}, %s::json){tail}")
    stamps = [c.name for c in table.columns if isinstance(c.type, UTCDateTime)]
    for row in rows:
        for name in stamps:
            value = row[name]
            if value is not None and value.tzinfo is None:
                raise ValueError(f"naive datetime given to the UTC column {name}")
    conn.exec_driver_sql(sql, (json_dumps(list(rows)),))
