"""Migration 0005 on PostgreSQL and SQLite: the results' identity becomes their primary key and
back, rows kept; the schema at head is the one ``fakescan/db/models.py`` declares."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect, text

from fakescan.db.migrate import alembic_config
from fakescan.db.models import Base

pytestmark = pytest.mark.integration

IDENTITY = ["object_id", "detector", "detector_version"]
ROWS = [(1, "default", "1", 0.25), (1, "provenance", "1.0.0", None), (2, "default", "1", 0.75)]


def seed_at_0004(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO objects (id, uri, store, key, fingerprint, first_seen, updated_at) VALUES "
            "(1, 's3://b/1', 's3://b', '1', 'etag:1:1', '2026-12-01', '2026-12-01'), "
            "(2, 's3://b/2', 's3://b', '2', 'etag:2:1', '2026-12-01', '2026-12-01')"))
        for object_id, detector, version, score in ROWS:
            connection.execute(text(
                "INSERT INTO results (object_id, detector, detector_version, fingerprint, status, score, scanned_at) "
                "VALUES (:o, :d, :v, 'etag', 'ok', :s, '2026-12-01')"), {"o": object_id, "d": detector, "v": version,
                                                                         "s": score})


def stored(engine: Engine) -> list[tuple[object, ...]]:
    with engine.connect() as connection:
        return sorted(tuple(row) for row in connection.execute(
            text("SELECT object_id, detector, detector_version, score FROM results")))


def schema_differences(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        return compare_metadata(MigrationContext.configure(connection), Base.metadata)


def check_up_and_down(url: str) -> None:
    config = alembic_config(url)
    engine = create_engine(url)
    try:
        command.upgrade(config, "0004")
        seed_at_0004(engine)
        command.upgrade(config, "head")
        found = inspect(engine)
        assert found.get_pk_constraint("results")["constrained_columns"] == IDENTITY
        assert "id" not in {column["name"] for column in found.get_columns("results")}
        assert found.get_indexes("results") == [] and found.get_unique_constraints("results") == []
        assert stored(engine) == sorted(ROWS)
        assert schema_differences(engine) == []

        command.downgrade(config, "0004")
        found = inspect(engine)
        assert found.get_pk_constraint("results")["constrained_columns"] == ["id"]
        assert {index["name"] for index in found.get_indexes("results") if not index["unique"]} == {"ix_results_scan",
                                                                          "ix_results_verdict_score"}
        assert [c["column_names"] for c in found.get_unique_constraints("results")] == [IDENTITY]
        assert stored(engine) == sorted(ROWS)
        with engine.begin() as connection:  # ids were numbered, and new rows get the next ones
            ids = list(connection.scalars(text("SELECT id FROM results ORDER BY id")))
            connection.execute(text(
                "INSERT INTO results (object_id, detector, detector_version, fingerprint, status, scanned_at) "
                "VALUES (2, 'provenance', '1.0.0', 'etag', 'ok', '2026-12-01')"))
            added = connection.scalar(text("SELECT id FROM results WHERE object_id = 2 AND detector = 'provenance'"))
        assert ids == [1, 2, 3] and added == 4

        command.upgrade(config, "head")
        assert len(stored(engine)) == len(ROWS) + 1
    finally:
        engine.dispose()


def test_0005_up_and_down_on_postgres(postgres_url):
    check_up_and_down(postgres_url)
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as connection:  # room on each page for in-place (HOT) rewrites
            options = connection.scalar(text("SELECT reloptions FROM pg_class WHERE relname = 'results'"))
        assert options == ["fillfactor=80"]
    finally:
        engine.dispose()


def test_0005_up_and_down_on_sqlite(tmp_path: Path):
    check_up_and_down(f"sqlite:///{tmp_path / 'fakescan.db'}")
