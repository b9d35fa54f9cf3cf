"""The one session factory: an engine, its schema checked, and sessions, built from the settings passed in.

Every role opens the results database here: the commands for one run (``with open_database(settings)``),
the HTTP API, the exporter and each worker process for their lifetime (``Database.connect`` then
``close``). Nothing here reads the environment; the caller's :class:`Settings` decide the URL.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from fakescan.db.engine import make_engine, make_sessionmaker
from fakescan.db.migrate import ensure_schema
from fakescan.settings import Settings


@dataclass(frozen=True)
class Database:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]

    @classmethod
    def connect(cls, settings: Settings, *, check_schema: bool = True) -> "Database":
        """``check_schema``: the embedded SQLite migrates itself, a server must be at head
        (SchemaOutOfDate otherwise); the engine is disposed when the check fails."""
        engine = make_engine(settings)
        try:
            if check_schema:
                ensure_schema(settings, engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(settings, engine, make_sessionmaker(engine))

    def check_ready(self) -> None:
        """The database answers and its schema is this fakescan's (raises otherwise)."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        ensure_schema(self.settings, self.engine)

    def close(self) -> None:
        self.engine.dispose()


@contextmanager
def open_database(settings: Settings, *, check_schema: bool = True) -> Iterator[Database]:
    """The database for one command: connected (and its schema checked) on entry, disposed on exit."""
    database = Database.connect(settings, check_schema=check_schema)
    try:
        yield database
    finally:
        database.close()
