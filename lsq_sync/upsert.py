"""Dialect-specific INSERT statements: skip-if-present, and bulk upserts at the driver's speed."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql.dml import Insert

from lsq_sync.types import UTCDateTime, json_dumps

# Characters per multi-row statement: at most 2 MB in UTF-8, inside every server's default
# max_allowed_packet (4 MB on old MySQL, 16 MB on MariaDB, 64 MB on MySQL 8).
MAX_STATEMENT_CHARS = 500_000
_PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}


def is_mysql(dialect: Dialect) -> bool:
    return dialect.name in ("mysql", "mariadb")


def dialect_insert(conn: Connection, table: Table) -> Any:
    name = conn.dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if is_mysql(conn.dialect):
        return mysql.insert(table)
    return sqlite.insert(table)


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
    dict per row, named parameters the driver reorders again), and it does not fold upserts
    into multi-row statements. Here a batch is one statement where the driver allows it
    (PostgreSQL, PyMySQL) and plain tuples otherwise; values go through their column type's
    own bind processor, or an equivalent the tests hold to it, so what is stored is what
    SQLAlchemy would store.
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
    head = f"{target} VALUES "
    if dialect.name == "postgresql":
        _postgresql_upsert(conn, table, target, tail, rows)
        return
    if dialect.driver == "pymysql":
        _pymysql_upsert(conn, table, names, head, tail, rows)
        return
    row = "(" + ", ".join([placeholder] * len(names)) + ")"
    conn.exec_driver_sql(head + row + tail, driver_values(dialect, table, names, rows))


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


# MySQL's string escapes (mysql_real_escape_string), and what is left of them when the
# session's sql_mode has NO_BACKSLASH_ESCAPES. A list indexed by code point, as PyMySQL
# keeps it: str.translate runs twice as fast with it as with a dict.
_MYSQL_ESCAPES: list[str] = [chr(code) for code in range(128)]
for _char, _escaped in {"\0": "\\0", "\\": "\\\\", "\n": "\\n", "\r": "\\r",
                        "\x1a": "\\Z", '"': '\\"', "'": "\\'"}.items():
    _MYSQL_ESCAPES[ord(_char)] = _escaped
_MYSQL_QUOTES_ONLY = str.maketrans({"'": "''"})


def _pymysql_upsert(conn: Connection, table: Table, names: Sequence[str], head: str,
                    tail: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """Multi-row statements with the values written as MySQL literals.

    PyMySQL interpolates parameters on the client anyway (MySQL's text protocol); its
    executemany does the same per value through several layers of Python calls, which made
    it the slowest part of a batch. Here each column gets one function that applies the
    column type's bind processor and writes the literal: text, NULL, integers and naive
    UTC datetimes (what our columns' processors produce) directly, anything else through
    PyMySQL's own escaping.
    """
    from pymysql.constants import SERVER_STATUS  # only with the mysql extra installed

    dbapi = cast(Any, conn.connection.dbapi_connection)
    escape = dbapi.escape
    no_backslashes = dbapi.server_status & SERVER_STATUS.SERVER_STATUS_NO_BACKSLASH_ESCAPES
    escapes = _MYSQL_QUOTES_ONLY if no_backslashes else _MYSQL_ESCAPES

    def literal(value: Any) -> str:
        kind = type(value)
        if kind is str:
            return "'" + str.translate(value, escapes) + "'"
        if value is None:
            return "NULL"
        if kind is int:
            return str(value)
        if kind is datetime and value.tzinfo is None:
            return "'" + datetime.isoformat(value, " ") + "'"
        return str(escape(value))

    def through(process: Callable[[Any], Any]) -> Callable[[Any], str]:
        return lambda value: literal(process(value))

    renderers = [literal if process is None else through(process)
                 for process in bind_processors(conn.dialect, table, names)]
    pairs = list(zip(names, renderers, strict=True))
    room = MAX_STATEMENT_CHARS - len(head) - len(tail)
    rendered: list[str] = []
    size = 0
    for row in rows:
        text = "(" + ",".join([render(row[name]) for name, render in pairs]) + ")"
        if rendered and size + len(text) + 1 > room:
            _execute_plain(conn, head + ",".join(rendered) + tail)
            rendered, size = [], 0
        rendered.append(text)
        size += len(text) + 1
    _execute_plain(conn, head + ",".join(rendered) + tail)


def _execute_plain(conn: Connection, sql: str) -> None:
    # Without no_parameters the driver would %-format the SQL: a '%' in the data would break it.
    conn.exec_driver_sql(sql, execution_options={"no_parameters": True})
