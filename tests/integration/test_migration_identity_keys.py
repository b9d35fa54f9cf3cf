"""Migration 0005 on PostgreSQL and SQLite: the identities of results and verdicts become their
primary keys and back, rows kept; the schema at head is the one ``fakescan/db/models.py`` declares."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect, text

from fakescan.db.migrate import alembic_config
from fakescan.db.models import Base, schema_filter

pytestmark = pytest.mark.integration

IDENTITY = ["object_id", "detector", "detector_version"]
VERDICT_IDENTITY = ["object_id", "policy_version"]
LISTING_INDEXES = {"ix_verdicts_listing_score", "ix_verdicts_listing_any_score", "ix_verdicts_listing_time",
                   "ix_verdicts_listing_any_time"}
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
        connection.execute(text(
            "INSERT INTO verdicts (object_id, policy_version, verdict, score, explanation, decided_at) VALUES "
            "(1, 'default-1', 'real', 0.25, '{}', '2026-12-01'), (2, 'default-1', 'fake', 0.75, '{}', '2026-12-01')"))


def stored(engine: Engine) -> list[tuple[object, ...]]:
    with engine.connect() as connection:
        return sorted(tuple(row) for row in connection.execute(
            text("SELECT object_id, detector, detector_version, score FROM results")))


def stored_verdicts(engine: Engine) -> list[tuple[object, ...]]:
    with engine.connect() as connection:
        return sorted(tuple(row) for row in connection.execute(text("SELECT object_id, verdict FROM verdicts")))


def secondary_indexes(engine: Engine, table: str) -> set[str]:
    return {index["name"] for index in inspect(engine).get_indexes(table) if not index["unique"]}


def schema_differences(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"include_object": schema_filter(engine.dialect.name)})
        return compare_metadata(context, Base.metadata)


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
        assert found.get_pk_constraint("verdicts")["constrained_columns"] == VERDICT_IDENTITY
        assert "id" not in {column["name"] for column in found.get_columns("verdicts")}
        assert secondary_indexes(engine, "verdicts") == LISTING_INDEXES
        assert stored(engine) == sorted(ROWS) and stored_verdicts(engine) == [(1, "real"), (2, "fake")]
        assert schema_differences(engine) == []

        command.downgrade(config, "0004")
        found = inspect(engine)
        assert found.get_pk_constraint("results")["constrained_columns"] == ["id"]
        assert secondary_indexes(engine, "results") == {"ix_results_scan", "ix_results_verdict_score"}
        assert [c["column_names"] for c in found.get_unique_constraints("results")] == [IDENTITY]
        assert found.get_pk_constraint("verdicts")["constrained_columns"] == ["id"]
        assert secondary_indexes(engine, "verdicts") == LISTING_INDEXES | {"ix_verdicts_policy_verdict"}
        assert [c["column_names"] for c in found.get_unique_constraints("verdicts")] == [VERDICT_IDENTITY]
        assert stored(engine) == sorted(ROWS) and stored_verdicts(engine) == [(1, "real"), (2, "fake")]
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
