"""Engines and sessions, built from settings; never at import time."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from sqlalchemy import Engine, create_engine, event, make_url
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
    insert = _DIALECT_INSERT[session.get_bind().dialect.name]
    statement = insert(table)
    statement = statement.on_conflict_do_update(
        index_elements=list(keys),
        set_={column: statement.excluded[column] for column in update},
        where=only_if(statement.excluded) if only_if else None,
    )
    # executemany, not .values(rows): one cached statement, batched into multi-row VALUES by the
    # driver layer; compiling a fresh 500-row VALUES statement per call took ~0.6 s
    session.execute(statement, list(rows))
