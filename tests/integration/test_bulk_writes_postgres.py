"""Bulk writes on PostgreSQL: many rows in one statement read back exactly as they were given.

The one-statement paths (the worker's batch writer, the scheduler's chunk) are checked against
the portable statements they replace on SQLite: the same rows, item states, locks and re-runs.
"""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import delete, event, func, select, text

from fakescan.db import migrate, scans
from fakescan.db.engine import make_engine, make_sessionmaker
from fakescan.db.models import Result, Scan, ScanItem, StoredObject
from fakescan.db.objects import prior_results, record_listed, upsert_objects
from fakescan.db.results import _write_step_by_step, write_batch
from fakescan.settings import load_settings
from fakescan.storage import ObjectInfo

pytestmark = pytest.mark.integration
DETECTORS = ("provenance", "cnn", "flaky")
STAMP = datetime(2026, 12, 1, 12, 0, 0, 250000, tzinfo=timezone.utc)
WHEN = datetime(2026, 11, 30, 8, 0, 0, 500000, tzinfo=timezone.utc)


@pytest.fixture
def sessions(postgres_url):
    settings = load_settings(database_url=postgres_url)
    migrate.upgrade(settings)
    engine = make_engine(settings)
    yield make_sessionmaker(engine)
    engine.dispose()


def test_a_batch_of_results_is_one_statement_and_reads_back_unchanged(sessions):
    engine = sessions.kw["bind"]
    with sessions.begin() as session:
        objects = [StoredObject(uri=f"file:///bulk/{i}.jpg", store="file:///bulk", key=f"{i}.jpg",
                                fingerprint=f"sha256:{i}") for i in range(300)]
        session.add_all(objects)
        session.flush()
        ids = [row.id for row in objects]
        scan_id = scans.create_scan(session, "file:///bulk", [], {})
        scans.add_batches(session, scan_id, 1, [ids[:150], ids[150:]])
    stamp = datetime(2026, 12, 1, 12, 30, 15, 123456, tzinfo=timezone.utc)
    rows = [{"object_id": object_id, "detector": detector, "detector_version": "v1", "fingerprint": "f",
             "status": "ok" if detector != "broken" else "error",
             "score": 0.125 if detector != "broken" else None, "verdict": None,
             "parts": {"a": 0.5, "nested": {"b": [1, 2]}} if detector == "ensemble" else None,
             "evidence": {"summary": "it's \"quoted\" and ünïcode"} if detector == "provenance" else None,
             "error": "corrupt: bad" if detector == "broken" else None,
             "timings": {"decode_ms": 1.5}, "scanned_at": stamp}
            for object_id in ids for detector in ("provenance", "ensemble", "broken")]
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *args: statements.append(statement))
    with sessions.begin() as session:
        assert write_batch(session, scan_id, rows) == sorted(ids)
    assert sum("INSERT INTO results" in statement for statement in statements) == 1
    with sessions() as session:
        stored = {(r.object_id, r.detector): r for r in session.scalars(select(Result))}
        items = dict(session.execute(select(ScanItem.object_id, ScanItem.batch)).all())
    assert len(stored) == len(rows)
    for row in rows:
        got = stored[(row["object_id"], row["detector"])]
        for name in ("status", "score", "parts", "evidence", "error", "timings", "scanned_at"):
            assert getattr(got, name) == row[name], name
    assert items[ids[0]] == 1 and items[ids[-1]] == 2
    with sessions.begin() as session:  # the same batch again: rows updated, not added
        write_batch(session, scan_id, [dict(row, score=0.75) for row in rows if row["status"] == "ok"])
    with sessions() as session:
        scores = {r.score for r in session.scalars(select(Result)) if r.status == "ok"}
        assert scores == {0.75} and len(session.scalars(select(Result)).all()) == len(rows)


def new_scan(sessions, count: int, batches: int = 1, listing_done: bool = False) -> tuple[int, list[int]]:
    prefix = uuid.uuid4().hex
    with sessions.begin() as session:
        objects = [StoredObject(uri=f"file:///w/{prefix}/{i}.jpg", store="file:///w", key=f"{i}.jpg",
                                fingerprint=f"sha256:{i}") for i in range(count)]
        session.add_all(objects)
        session.flush()
        ids = [row.id for row in objects]
        scan_id = scans.create_scan(session, "file:///w", [], {})
        size = -(-count // batches)
        scans.add_batches(session, scan_id, 1, [ids[start:start + size] for start in range(0, count, size)])
        scans.start_listing(session, scan_id)
        if listing_done:
            scans.finish_listing(session, scan_id)
    return scan_id, ids


def batch_rows(ids: list[int], score: float, when: datetime = STAMP) -> list[dict[str, Any]]:
    """Every third object's 'flaky' detector fails (bad input), the others score."""
    rows = []
    for position, object_id in enumerate(ids):
        for detector in DETECTORS:
            failed = detector == "flaky" and position % 3 == 0
            rows.append({"object_id": object_id, "detector": detector, "detector_version": "v1",
                         "fingerprint": f"sha256:{position}", "status": "error" if failed else "ok",
                         "score": None if failed else score, "verdict": None if failed else "real",
                         "parts": {"member": score} if detector == "cnn" else None,
                         "evidence": {"finding": "none", "signals": []} if detector == "provenance" else None,
                         "error": "corrupt: truncated" if failed else None,
                         "timings": {"decode_ms": 1.25}, "scanned_at": when})
    return rows


def stored(sessions, scan_id: int, ids: list[int]) -> tuple[list[tuple[Any, ...]], dict[int, str], str]:
    """Results (by position in ``ids``), item states (by position) and the scan's state."""
    position = {object_id: index for index, object_id in enumerate(ids)}
    with sessions() as session:
        results = sorted(
            (position[r.object_id], r.detector, r.detector_version, r.scan_id == scan_id, r.fingerprint, r.status,
             r.score, r.verdict, r.parts, r.evidence, r.error, r.timings, r.scanned_at)
            for r in session.scalars(select(Result).where(Result.object_id.in_(ids))))
        items = {position[object_id]: state for object_id, state in session.execute(
            select(ScanItem.object_id, ScanItem.state).where(ScanItem.scan_id == scan_id))}
        state = session.scalar(select(Scan.state).where(Scan.id == scan_id))
    return results, items, str(state)


def test_one_statement_writer_leaves_what_the_portable_writer_leaves(sessions):
    outcomes = []
    for writer in (write_batch, _write_step_by_step):
        scan_id, ids = new_scan(sessions, 30, listing_done=True)
        with sessions.begin() as session:  # an object deleted before its batch is written
            session.execute(delete(StoredObject).where(StoredObject.id == ids[4]))
        with sessions.begin() as session:
            written = writer(session, scan_id, batch_rows(ids, 0.25))
        assert written == sorted(set(ids) - {ids[4]})
        with sessions.begin() as session:  # redelivered, scored again
            writer(session, scan_id, batch_rows(ids, 0.75, STAMP + timedelta(seconds=1)))
        outcomes.append(stored(sessions, scan_id, ids))
    (results, items, state), (portable_results, portable_items, _) = outcomes
    assert results == portable_results
    assert items == portable_items
    assert len(results) == 29 * len(DETECTORS) and {row[6] for row in results if row[5] == "ok"} == {0.75}
    assert items[0] == "error" and items[1] == "done" and 4 not in items
    assert state == "finished"  # the one-statement writer ended its scan (the portable step alone does not)


def test_a_redelivered_batch_rewrites_its_rows_in_place_in_one_results_statement(sessions):
    scan_id, ids = new_scan(sessions, 12)
    with sessions.begin() as session:
        write_batch(session, scan_id, batch_rows(ids, 0.5))
    with sessions() as session:
        first = identities(session, ids)
    statements: list[str] = []
    engine = sessions.kw["bind"]
    listener = lambda conn, cursor, statement, *args: statements.append(statement)  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        with sessions.begin() as session:
            assert write_batch(session, scan_id, batch_rows(ids, 0.9)) == sorted(ids)
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert sum("INSERT INTO results" in statement for statement in statements) == 1
    assert len(statements) == 3  # the batch, the scan's row lock, the completion check
    with sessions() as session:
        again = identities(session, ids)
        scores = set(session.scalars(select(Result.score).where(Result.object_id.in_(ids), Result.status == "ok")))
    assert again == first and scores == {0.9}
    _, items, state = stored(sessions, scan_id, ids)
    assert set(items.values()) == {"done", "error"} and state == "running"  # listing not finished yet


def identities(session, ids):
    """The rows' keys and how many rows there are (the key is the primary key: no duplicate can exist)."""
    keys = session.execute(select(Result.object_id, Result.detector, Result.detector_version)
                           .where(Result.object_id.in_(ids))).all()
    return sorted(keys), len(keys)


def test_rows_of_a_deleted_scan_are_dropped(sessions):
    scan_id, ids = new_scan(sessions, 3)
    with sessions.begin() as session:
        session.execute(delete(Scan).where(Scan.id == scan_id))
    with sessions.begin() as session:
        assert write_batch(session, scan_id, batch_rows(ids, 0.5)) == []
    with sessions() as session:
        assert session.scalars(select(Result).where(Result.object_id.in_(ids))).all() == []


def test_concurrent_batches_and_redeliveries_finish_the_scan_once(sessions):
    for _ in range(3):
        scan_id, ids = new_scan(sessions, 40, batches=4, listing_done=True)
        batches = [ids[start:start + 10] for start in range(0, 40, 10)]
        deliveries = batches + batches[:2]  # two batches redelivered while their first delivery runs
        errors = deliver_at_once(sessions, scan_id, deliveries)
        assert errors == []
        results, items, state = stored(sessions, scan_id, ids)
        assert len(results) == 40 * len(DETECTORS) and "queued" not in items.values()
        assert state == "finished"


def deliver_at_once(sessions, scan_id: int, deliveries: list[list[int]]) -> list[BaseException]:
    """Each batch written by its own thread, all released together; the errors they raised."""
    barrier = threading.Barrier(len(deliveries))
    errors: list[BaseException] = []

    def deliver(batch: list[int]) -> None:
        try:
            barrier.wait()
            with sessions.begin() as session:
                write_batch(session, scan_id, batch_rows(batch, 0.5))
        except BaseException as error:  # handed to the test thread
            errors.append(error)

    threads = [threading.Thread(target=deliver, args=(batch,)) for batch in deliveries]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def infos(root: str, count: int, content: str = "a") -> list[ObjectInfo]:
    return [ObjectInfo(uri=f"{root}/{i}.jpg", store=root, key=f"{i}.jpg", size=10 + i, last_modified=WHEN,
                       content_hash=f"{content}{i}") for i in range(count)]


def test_one_statement_chunk_matches_the_portable_statements(sessions):
    detectors = [("cnn", "1"), ("provenance", "2")]
    outcomes = []
    for label, record in (("one", record_listed),
                          ("portable", lambda s, chunk, keys: (ids := upsert_objects(s, chunk),
                                                               prior_results(s, list(ids.values()), keys)))):
        root = f"file:///chunk-{label}"
        with sessions.begin() as session:
            first, _ = record(session, infos(root, 6), detectors)
            # earlier results: object 0 by both detectors, object 1 by an older cnn version
            for object_id, name, version in ((first[f"{root}/0.jpg"], "cnn", "1"),
                                             (first[f"{root}/0.jpg"], "provenance", "2"),
                                             (first[f"{root}/1.jpg"], "cnn", "0")):
                session.add(Result(object_id=object_id, detector=name, detector_version=version,
                                   fingerprint="sha256:a0" if object_id == first[f"{root}/0.jpg"] else "x",
                                   status="ok", scanned_at=WHEN))
        with sessions() as session:
            before = dict(session.execute(text("SELECT uri, xmin::text FROM objects WHERE store = :root"),
                                          {"root": root}).all())
        changed = infos(root, 8)
        changed[2] = infos(root, 8, content="b")[2]  # new content
        with sessions.begin() as session:
            again, prior = record(session, changed, detectors)
        with sessions() as session:
            after = dict(session.execute(text("SELECT uri, xmin::text FROM objects WHERE store = :root"),
                                         {"root": root}).all())
            stored = {row.uri: (row.fingerprint, row.last_modified, row.size) for row in
                      session.scalars(select(StoredObject).where(StoredObject.store == root))}
        assert again[f"{root}/0.jpg"] == first[f"{root}/0.jpg"] and len(again) == 8
        rewritten = sorted(uri.rsplit("/", 1)[1] for uri in before if before[uri] != after[uri])
        position = {object_id: uri.rsplit("/", 1)[1] for uri, object_id in again.items()}
        outcomes.append((rewritten, sorted((position[p.object_id], p.detector, p.detector_version, p.fingerprint)
                                           for p in prior),
                         {uri.rsplit("/", 1)[1]: value for uri, value in stored.items()}))
    assert outcomes[0] == outcomes[1]
    rewritten, prior, stored = outcomes[0]
    assert rewritten == ["2.jpg"]  # an unchanged object is not rewritten
    assert prior == [("0.jpg", "cnn", "1", "sha256:a0"), ("0.jpg", "provenance", "2", "sha256:a0")]
    assert stored["2.jpg"][0] == "sha256:b2" and stored["7.jpg"] == ("sha256:a7", WHEN, 17)


def test_items_and_totals_of_a_chunk_in_one_statement(sessions):
    with sessions.begin() as session:
        ids, _ = record_listed(session, infos("file:///items", 5), [])
        scan_id = scans.create_scan(session, "file:///items", [], {})
        object_ids = sorted(ids.values())
        scans.enqueue_batches(session, scan_id, 3, [object_ids[:2], object_ids[2:]], listed=9, enqueued=5, skipped=4)
    with sessions() as session:
        items = session.execute(select(ScanItem.object_id, ScanItem.batch, ScanItem.state)
                                .where(ScanItem.scan_id == scan_id).order_by(ScanItem.object_id)).all()
        scan = scans.get_scan(session, scan_id)
    assert [tuple(item) for item in items] == [(object_ids[0], 3, "queued"), (object_ids[1], 3, "queued")] + [
        (object_id, 4, "queued") for object_id in object_ids[2:]]
    assert (scan.listed, scan.enqueued, scan.skipped) == (9, 5, 4)


def test_json_nulls_are_stored_as_sql_nulls(sessions):
    """The rows travel as JSON arrays: a missing value of a JSON column is SQL NULL, not JSON null."""
    scan_id, ids = new_scan(sessions, 6)
    rows = batch_rows(ids, 0.1)
    with sessions.begin() as session:
        write_batch(session, scan_id, rows)
    with sessions() as session:
        nulls = session.execute(select(func.count().filter(Result.parts.is_(None)),
                                       func.count().filter(Result.evidence.is_(None)),
                                       func.count().filter(Result.error.is_(None)))).one()
        scores = set(session.scalars(select(Result.score).where(Result.score.is_not(None))))
    expected = (sum(row["parts"] is None for row in rows), sum(row["evidence"] is None for row in rows),
                sum(row["error"] is None for row in rows))
    assert tuple(nulls) == expected and expected[0] > 0 and scores == {0.1}


def test_whole_number_scores_and_columns_without_a_value_are_written(sessions):
    """Each column travels as one typed array: whole-number scores among fractions, a column with
    no value in any row, and a batch with no error read back as given."""
    scan_id, ids = new_scan(sessions, 4)
    rows = [dict(row, score=[0, 1, 0.5, None][position % 4], verdict=None, error=None, status="ok")
            for position, row in enumerate(batch_rows(ids, 0.0))]
    with sessions.begin() as session:
        assert write_batch(session, scan_id, rows) == sorted(ids)
    with sessions() as session:
        stored = {(r.object_id, r.detector): (r.score, r.verdict, r.error) for r in session.scalars(select(Result))}
    assert stored == {(row["object_id"], row["detector"]): (row["score"], None, None) for row in rows}
    assert {type(score) for score, _, _ in stored.values()} == {float, type(None)}
