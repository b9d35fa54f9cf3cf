"""Run Alembic from code: ``fakescan db upgrade`` and the embedded SQLite default."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

import migrations
from fakescan.db.engine import checked_database_url
from fakescan.settings import Settings


class SchemaOutOfDate(RuntimeError):
    pass


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(settings: Settings, revision: str = "head") -> None:
    url = checked_database_url(settings)
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(settings.resolved_database_url()), revision)


def head_revision(settings: Settings) -> str | None:
    return ScriptDirectory.from_config(alembic_config(settings.resolved_database_url())).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def ensure_schema(settings: Settings, engine: Engine) -> None:
    """The embedded SQLite default migrates itself; a shared server must be migrated on purpose."""
    current, head = current_revision(engine), head_revision(settings)
    if current == head:
        return
    if engine.dialect.name == "sqlite":
        upgrade(settings)
        return
    raise SchemaOutOfDate(
        f"database schema is at {current or 'nothing'}, this fakescan needs {head}: run 'fakescan db upgrade'"
    )
