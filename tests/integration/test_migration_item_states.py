"""Migration 0003 on PostgreSQL: rows written under 0002's item states get the new ones."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from fakescan.cli import main
from fakescan.db.engine import make_engine
from fakescan.settings import load_settings

pytestmark = pytest.mark.integration


def test_failed_items_become_error_and_a_given_up_batch_given_up(postgres_url, monkeypatch):
    monkeypatch.setenv("FAKESCAN_DATABASE_URL", postgres_url)
    assert main(["db", "upgrade", "0002"]) == 0
    engine = make_engine(load_settings())
    try:
        with engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO objects (id, uri, store, key, fingerprint, first_seen, updated_at) "
                "SELECT n, 's3://b/' || n, 's3://b', '' || n, 'etag:' || n, now(), now() FROM generate_series(1, 6) n"))
            connection.execute(text(
                "INSERT INTO scans (id, source, detectors, options, state, listed, enqueued, skipped, error, "
                "created_at) VALUES (1, 's3://b', '[]', '{}', 'failed', 6, 6, 0, "
                "'batch 2 gave up after 9 attempts: InfrastructureFault: cannot reach object storage', now())"))
            for object_id, batch, state in [(1, 1, "done"), (2, 1, "failed"), (3, 2, "queued"), (4, 2, "queued"),
                                            (5, 3, "queued"), (6, 3, "done")]:
                connection.execute(text("INSERT INTO scan_items (scan_id, object_id, batch, state, updated_at) "
                                        "VALUES (1, :o, :b, :s, now())"), {"o": object_id, "b": batch, "s": state})
        assert main(["db", "upgrade"]) == 0
        with engine.connect() as connection:
            states = dict(connection.execute(text("SELECT object_id, state FROM scan_items ORDER BY object_id")).all())
        # batch 2 gave up; batch 3 never ran (still queued: the reconciler or a resume sends it)
        assert states == {1: "done", 2: "error", 3: "given-up", 4: "given-up", 5: "queued", 6: "done"}
    finally:
        engine.dispose()
