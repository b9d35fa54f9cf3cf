"""results.object_id and results.scan_id keep their promises on both backends: no result of a
missing object or scan, an object's delete removes its results, a scan's delete clears their
``scan_id``; on PostgreSQL (statement-level triggers, migration 0006) also under two connections
racing, and the migration goes down to the foreign keys and up again."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from alembic import command
from sqlalchemy import Connection, Engine, create_engine, inspect, text
from sqlalchemy.exc import IntegrityError, NotSupportedError, OperationalError

from fakescan.db import migrate
from fakescan.db.engine import make_engine
from fakescan.db.migrate import alembic_config
from fakescan.settings import load_settings

pytestmark = pytest.mark.integration

INSERT_RESULT = ("INSERT INTO results (object_id, detector, detector_version, scan_id, fingerprint, status, "
                 "scanned_at) VALUES (:object, :detector, '1', :scan, 'f', 'ok', '2026-12-01')")
TRIGGERS = {"results_inserted", "results_updated", "results_object_changed", "objects_deleted", "scans_deleted",
            "objects_truncated", "scans_truncated", "objects_id_changed", "scans_id_changed"}


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(request, tmp_path: Path) -> Iterator[Engine]:
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else \
        f"sqlite:///{tmp_path / 'fakescan.db'}"
    settings = load_settings(database_url=url)
    migrate.upgrade(settings)
    built = make_engine(settings)  # SQLite: foreign keys on, as fakescan runs it
    yield built
    built.dispose()


@pytest.fixture
def postgres(postgres_url: str) -> Iterator[Engine]:
    settings = load_settings(database_url=postgres_url)
    migrate.upgrade(settings)
    built = make_engine(settings)
    yield built
    built.dispose()


def seed(engine: Engine, objects: int = 3, scans: int = 2) -> None:
    """Objects 1..objects, scans 1..scans, and a result of each object by detector 'a' in scan 1."""
    with engine.begin() as connection:
        for object_id in range(1, objects + 1):
            connection.execute(text(
                "INSERT INTO objects (id, uri, store, key, fingerprint, first_seen, updated_at) "
                "VALUES (:id, :uri, 'file:///r', :key, 'f', '2026-12-01', '2026-12-01')"),
                {"id": object_id, "uri": f"file:///r/{object_id}", "key": str(object_id)})
        for scan_id in range(1, scans + 1):
            connection.execute(text(
                "INSERT INTO scans (id, source, detectors, options, state, listed, enqueued, skipped, created_at) "
                "VALUES (:id, 'file:///r', '[]', '{}', 'running', 0, 0, 0, '2026-12-01')"), {"id": scan_id})
        for object_id in range(1, objects + 1):
            connection.execute(text(INSERT_RESULT), {"object": object_id, "detector": "a", "scan": 1})


def results(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(
            text("SELECT object_id, detector, scan_id FROM results ORDER BY object_id, detector"))]


def execute(engine: Engine, statement: str, isolation: str | None = None, **parameters: Any) -> None:
    """``statement`` in a transaction of its own, at ``isolation`` (default: the server's)."""
    with engine.connect() as connection:
        if isolation:
            connection.execution_options(isolation_level=isolation)
        connection.execute(text(statement), parameters)
        connection.commit()


def test_a_result_of_a_missing_object_or_scan_is_refused(engine):
    seed(engine)
    for object_id, scan_id in ((99, 1), (1, 99)):
        with pytest.raises(IntegrityError):
            execute(engine, INSERT_RESULT, object=object_id, detector="b", scan=scan_id)
    with pytest.raises(IntegrityError):  # one missing object among many rows is enough
        with engine.begin() as connection:
            connection.execute(text(INSERT_RESULT), [{"object": object_id, "detector": "b", "scan": 2}
                                                     for object_id in (1, 2, 42, 3)])
    execute(engine, INSERT_RESULT, object=2, detector="b", scan=None)  # no scan is fine
    assert results(engine) == [(1, "a", 1), (2, "a", 1), (2, "b", None), (3, "a", 1)]


def test_an_update_cannot_point_a_result_at_a_missing_object_or_scan(engine):
    seed(engine)
    with pytest.raises(IntegrityError):
        execute(engine, "UPDATE results SET object_id = 99 WHERE object_id = 1")
    with pytest.raises(IntegrityError):
        execute(engine, "UPDATE results SET scan_id = 99 WHERE object_id = 1")
    execute(engine, "UPDATE results SET object_id = 3, detector = 'moved' WHERE object_id = 1")
    execute(engine, "UPDATE results SET scan_id = 2 WHERE object_id = 2")
    assert results(engine) == [(2, "a", 2), (3, "a", 1), (3, "moved", 1)]


def test_deleting_objects_deletes_their_results_and_deleting_a_scan_clears_scan_id(engine):
    seed(engine, objects=4)
    execute(engine, INSERT_RESULT, object=2, detector="b", scan=2)
    execute(engine, "DELETE FROM objects WHERE id IN (1, 3)")
    assert results(engine) == [(2, "a", 1), (2, "b", 2), (4, "a", 1)]
    execute(engine, "DELETE FROM scans WHERE id = 1")
    assert results(engine) == [(2, "a", None), (2, "b", 2), (4, "a", None)]


def test_the_id_of_a_referenced_object_or_scan_cannot_change(engine):
    seed(engine, objects=2, scans=2)
    for table in ("objects", "scans"):
        with pytest.raises(IntegrityError):
            execute(engine, f"UPDATE {table} SET id = 50 WHERE id = 1")
    execute(engine, "UPDATE scans SET id = 60 WHERE id = 2")  # no result names scan 2
    assert results(engine) == [(1, "a", 1), (2, "a", 1)]


def test_truncating_objects_or_scans_takes_the_results_along(postgres):
    seed(postgres)
    execute(postgres, "TRUNCATE scans CASCADE")
    assert results(postgres) == [(1, "a", None), (2, "a", None), (3, "a", None)]
    execute(postgres, "TRUNCATE objects CASCADE")
    assert results(postgres) == []


def test_deletes_above_read_committed_are_refused_not_left_half_done(postgres):
    """A REPEATABLE READ snapshot may miss results committed after it: the triggers refuse."""
    seed(postgres)
    for isolation in ("REPEATABLE READ", "SERIALIZABLE"):
        for statement in ("DELETE FROM objects WHERE id = 1", "DELETE FROM scans WHERE id = 1"):
            with pytest.raises(NotSupportedError, match="READ COMMITTED"):
                execute(postgres, statement, isolation)
    assert results(postgres) == [(1, "a", 1), (2, "a", 1), (3, "a", 1)]


def run_blocked(postgres: Engine, statement: str, isolation: str | None = None,
                **parameters: Any) -> tuple[threading.Thread, list[BaseException]]:
    """``statement`` in its own transaction on a thread, returned once PostgreSQL shows it waiting
    for a lock; the errors it raised are in the list once the thread ends."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            execute(postgres, statement, isolation, **parameters)
        except BaseException as error:  # handed to the test thread
            errors.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    wait_for(lambda: waiting_for_a_lock(postgres) == 1 or not thread.is_alive())
    assert thread.is_alive(), f"{statement} did not wait: {errors}"
    return thread, errors


def waiting_for_a_lock(postgres: Engine) -> int:
    with postgres.connect() as connection:
        return int(connection.scalar(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")))


def wait_for(condition: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.02)


def open_transaction(postgres: Engine) -> Connection:
    connection = postgres.connect()
    connection.begin()
    return connection


def test_a_delete_racing_an_insert_waits_for_it_and_removes_its_rows(postgres):
    seed(postgres)
    writer = open_transaction(postgres)
    writer.execute(text(INSERT_RESULT), {"object": 2, "detector": "b", "scan": 2})  # holds object 2, scan 2
    deleting_object, object_errors = run_blocked(postgres, "DELETE FROM objects WHERE id = 2")
    writer.commit()
    writer.close()
    deleting_object.join()
    writer = open_transaction(postgres)
    writer.execute(text(INSERT_RESULT), {"object": 3, "detector": "b", "scan": 2})
    deleting_scan, scan_errors = run_blocked(postgres, "DELETE FROM scans WHERE id = 2")
    writer.commit()
    writer.close()
    deleting_scan.join()
    assert object_errors == [] and scan_errors == []
    assert results(postgres) == [(1, "a", 1), (3, "a", 1), (3, "b", None)]


@pytest.mark.parametrize("isolation, refusal", [("READ COMMITTED", IntegrityError),
                                                 ("REPEATABLE READ", OperationalError)])  # a serialization failure
def test_an_insert_racing_a_delete_waits_for_it_and_fails(postgres, isolation, refusal):
    seed(postgres, objects=4, scans=3)
    for delete, row in (("DELETE FROM objects WHERE id = 2", {"object": 2, "detector": "b", "scan": 1}),
                        ("DELETE FROM scans WHERE id = 2", {"object": 1, "detector": "b", "scan": 2}),
                        ("DELETE FROM scans WHERE id = 3", {"object": 4, "detector": "b", "scan": 3})):
        deleter = open_transaction(postgres)
        deleter.execute(text(delete))  # its rows locked, not committed
        inserting, errors = run_blocked(postgres, INSERT_RESULT, isolation, **row)
        deleter.commit()
        deleter.close()
        inserting.join()
        assert len(errors) == 1 and isinstance(errors[0], refusal), errors
    assert results(postgres) == [(1, "a", 1), (3, "a", 1), (4, "a", 1)]


def foreign_keys(engine: Engine) -> list[tuple[str, str | None]]:
    return sorted((key["referred_table"], key["options"].get("ondelete"))
                  for key in inspect(engine).get_foreign_keys("results"))


def triggers(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(connection.scalars(text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")))


def test_0006_down_to_foreign_keys_and_up_on_postgres(postgres_url):
    config, engine = alembic_config(postgres_url), create_engine(postgres_url)
    try:
        command.upgrade(config, "head")
        seed(engine)
        assert foreign_keys(engine) == [] and triggers(engine) == TRIGGERS
        command.downgrade(config, "0005")
        assert foreign_keys(engine) == [("objects", "CASCADE"), ("scans", "SET NULL")] and triggers(engine) == set()
        with pytest.raises(IntegrityError):
            execute(engine, INSERT_RESULT, object=99, detector="b", scan=1)
        command.upgrade(config, "head")
        assert foreign_keys(engine) == [] and triggers(engine) == TRIGGERS
        assert results(engine) == [(1, "a", 1), (2, "a", 1), (3, "a", 1)]
    finally:
        engine.dispose()


def test_0006_keeps_the_foreign_keys_on_sqlite(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'fakescan.db'}"
    config, engine = alembic_config(url), create_engine(url)
    try:
        command.upgrade(config, "head")
        assert foreign_keys(engine) == [("objects", "CASCADE"), ("scans", "SET NULL")]
        command.downgrade(config, "0005")
        assert foreign_keys(engine) == [("objects", "CASCADE"), ("scans", "SET NULL")]
        command.upgrade(config, "head")
    finally:
        engine.dispose()
