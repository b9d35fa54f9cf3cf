"""Engines and sessions, built from settings; never at import time."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from sqlalchemy import Engine, bindparam, column, create_engine, event, func, make_url, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker

from fakescan.errors import UsageError
from fakescan.settings import Settings

_DIALECT_INSERT: dict[str, Callable[[Any], postgresql.Insert | sqlite.Insert]] = {
    "postgresql": postgresql.insert, "sqlite": sqlite.insert}


def make_engine(settings: Settings) -> Engine:
    return _create_engine(checked_database_url(settings))


def checked_database_url(settings: Settings) -> str:
    """The database URL; UsageError naming FAKESCAN_DATABASE_URL when it is malformed (the URL
    itself, which may hold a password, is not repeated)."""
    url = settings.resolved_database_url()
    try:
        make_url(url).get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as error:  # ValueError: a port that is no number
        reason = "unknown database kind" if isinstance(error, NoSuchModuleError) else "cannot be parsed"
        raise UsageError(f"FAKESCAN_DATABASE_URL is not a database URL: {reason} (expected e.g. "
                         "postgresql+psycopg://USER:PASSWORD@HOST:5432/DB or sqlite:////path/fakescan.db)") from None
    return url


def _create_engine(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def upsert(
    session: Session,
    table: Any,
    rows: Sequence[dict[str, Any]],
    keys: Iterable[str],
    update: Iterable[str],
    only_if: Callable[[Any], Any] | None = None,
) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE on PostgreSQL and SQLite alike.

    ``only_if(excluded)`` returns a condition limiting the update to rows that really changed,
    so re-listing an unchanged archive rewrites nothing (no dead tuples on PostgreSQL).
    """
    if not rows:
        return
    statement, parameters = _bulk_insert(session, table, rows)
    statement = statement.on_conflict_do_update(
        index_elements=list(keys),
        set_={column: statement.excluded[column] for column in update},
        where=only_if(statement.excluded) if only_if else None,
    )
    session.execute(statement, parameters)


def insert_rows(session: Session, table: Any, rows: Sequence[dict[str, Any]]) -> None:
    """A plain bulk INSERT of ``rows`` (same columns each), one statement on PostgreSQL."""
    if rows:
        session.execute(*_bulk_insert(session, table, rows))


def _bulk_insert(session: Session, table: Any, rows: Sequence[dict[str, Any]]) -> tuple[Any, Any]:
    dialect = session.get_bind().dialect.name
    insert = _DIALECT_INSERT[dialect]
    if dialect == "postgresql":
        return _from_recordset(insert, table, rows)
    # executemany: one cached statement for any number of rows (SQLite runs it row by row in C)
    return insert(table), list(rows)


def _from_recordset(insert: Any, table: Any, rows: Sequence[dict[str, Any]]) -> tuple[Any, dict[str, Any]]:
    """One statement whatever the number of rows: ``INSERT ... SELECT FROM jsonb_to_recordset(:rows)``.

    psycopg's executemany sends one INSERT per row (pipelined), and a compiled multi-row VALUES
    costs SQLAlchemy ~0.6 s per 500 rows; the rows as one JSON parameter cost neither (measured
    in ``tests/benchmarks/bench_writes.py``). JSON columns travel as nested JSON, timestamps as
    ISO strings, and every column is cast by the record definition to the table's own type."""
    names = list(rows[0])
    if any(len(row) != len(names) or row.keys() != rows[0].keys() for row in rows):
        raise ValueError("upsert rows must all have the same columns")
    source = (func.jsonb_to_recordset(bindparam("fakescan_rows", type_=postgresql.JSONB))
              .table_valued(*(column(name, table.c[name].type) for name in names))
              .render_derived(name="incoming", with_types=True))
    statement = insert(table).from_select(names, select(*(source.c[name] for name in names)))
    stamps = [name for name in names if _is_timestamp(table.c[name].type)]
    if not stamps:
        return statement, {"fakescan_rows": list(rows)}
    return statement, {"fakescan_rows": [{**row, **{name: _jsonable(row[name]) for name in stamps}} for row in rows]}


def _is_timestamp(column_type: Any) -> bool:
    try:
        return column_type.python_type in (datetime, date)
    except NotImplementedError:  # a type without a Python equivalent travels as it is
        return False


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, (datetime, date)) else value
