"""Bulk writes on PostgreSQL: many rows in one statement read back exactly as they were given."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import event, select

from fakescan.db import migrate, scans
from fakescan.db.engine import make_engine, make_sessionmaker
from fakescan.db.models import Result, ScanItem, StoredObject
from fakescan.db.results import write_batch
from fakescan.settings import load_settings

pytestmark = pytest.mark.integration


def test_a_batch_of_results_is_one_statement_and_reads_back_unchanged(postgres_url):
    settings = load_settings(database_url=postgres_url)
    migrate.upgrade(settings)
    engine = make_engine(settings)
    sessions = make_sessionmaker(engine)
    try:
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
    finally:
        engine.dispose()
