"""A scan always ends: a Redis restart without persistence mid-scan, and a scan whose workers are gone.

Real processes throughout: a Redis this module can kill and start again on the same port (no
append-only file, no snapshots: the restart loses every queued batch), PostgreSQL, moto S3, a
``fakescan worker`` subprocess and ``fakescan scan --wait`` as a subprocess whose reconciler
must find the lost batches and enqueue them again.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Iterator

import boto3
import pytest
from sqlalchemy import create_engine, func, select

from fakescan.db import migrate
from fakescan.db.models import Result, Scan, ScanItem
from fakescan.settings import load_settings
from tests import services
from tests.chaos_support import RedisServer, WorkerProcess, fakescan, fakescan_background, wait_for
from tests.conftest import AWS_TEST_ENV
from tests.worker_support import detector_folder, image_bytes

pytestmark = pytest.mark.integration
OBJECTS = 60


@pytest.fixture
def stack(postgres_service: Any, s3_service: Any, s3_bucket: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    redis = RedisServer(aof=False).start()
    database = services.create_database(postgres_service.url, f"r_{uuid.uuid4().hex[:10]}")
    migrate.upgrade(load_settings(database_url=database))
    env = {key: value for key, value in os.environ.items() if not key.startswith("FAKESCAN_")}
    env.update(AWS_TEST_ENV, FAKESCAN_BROKER_URL=redis.url, FAKESCAN_DATABASE_URL=database,
               FAKESCAN_S3_ENDPOINT_URL=s3_service.url, FAKESCAN_QUEUE=f"reconcile-{uuid.uuid4().hex[:8]}",
               FAKESCAN_HOME=str(tmp_path / "home"), FAKESCAN_VISIBILITY_TIMEOUT="15",
               FAKESCAN_RETRY_BACKOFF_MAX="2", FAKESCAN_BATCH_BUDGET="10", FAKESCAN_RECONCILE_GRACE="3",
               FAKESCAN_SCAN_PROVENANCE="false", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    client = boto3.client("s3", endpoint_url=s3_service.url)
    for index in range(OBJECTS):
        client.put_object(Bucket=s3_bucket, Key=f"in/{index:03d}.png", Body=image_bytes(index))
    detector = detector_folder(tmp_path / "detectors", "slow-bright", delay_seconds=0.4)
    engine = create_engine(database)
    workers: list[WorkerProcess] = []
    try:
        yield {"env": env, "redis": redis, "engine": engine, "source": f"s3://{s3_bucket}/in/",
               "detector": str(detector), "workers": workers, "folder": tmp_path}
    finally:
        for worker in workers:
            worker.kill()
        redis.close()
        engine.dispose()


def items(stack: dict[str, Any], scan_id: int) -> dict[str, int]:
    with stack["engine"].connect() as connection:
        return dict(connection.execute(select(ScanItem.state, func.count()).where(ScanItem.scan_id == scan_id)
                                       .group_by(ScanItem.state)).all())


def scan_with_one_worker(stack: dict[str, Any], name: str) -> tuple[WorkerProcess, Any, int]:
    """A worker, and ``fakescan scan --wait`` running in the background; returns both and the scan id."""
    worker = WorkerProcess(name, stack["env"], stack["folder"]).start()
    stack["workers"].append(worker)
    waiting = fakescan_background(stack["env"], "scan", stack["source"], "--detector", stack["detector"],
                                  "--batch-size", "4", "--wait")
    return worker, waiting, int(waiting.stdout.readline().split()[1])


def test_a_redis_restart_without_persistence_still_ends_finished(stack: dict[str, Any]) -> None:
    worker, waiting, scan_id = scan_with_one_worker(stack, "solo")
    wait_for(lambda: len(worker.starts(scan_id)) >= 2, "two batches started", 120)
    assert items(stack, scan_id).get("queued", 0) > 8  # most batches still wait in Redis

    stack["redis"].restart(down_seconds=2)  # no AOF: every queued batch is gone

    out, err = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, err
    assert f"done {OBJECTS}  error 0  given-up 0  state finished" in out
    assert "re-enqueued" in err  # the reconciler's warnings, batch by batch
    assert items(stack, scan_id) == {"done": OBJECTS}
    with stack["engine"].connect() as connection:
        rows = connection.execute(select(Result.object_id, func.count()).group_by(Result.object_id)).all()
    assert len(rows) == OBJECTS and {count for _, count in rows} == {1}, "every object scanned, once"
    assert "runs without an append-only file" in worker.text()  # said at start, before anything was lost


def test_the_worker_start_check_reads_the_broker_persistence(caplog: pytest.LogCaptureFixture) -> None:
    from worker.delivery import warn_if_broker_not_durable

    for aof in (False, True):
        redis = RedisServer(aof=aof).start()
        try:
            caplog.clear()
            assert warn_if_broker_not_durable(load_settings(broker_url=redis.url)) == {"aof": aof, "rdb": False}
            assert ("append-only file" in caplog.text) is not aof
        finally:
            redis.close()


def test_cancel_ends_a_scan_whose_workers_are_gone(stack: dict[str, Any]) -> None:
    worker, waiting, scan_id = scan_with_one_worker(stack, "doomed")
    wait_for(lambda: worker.starts(scan_id), "a batch started", 120)
    worker.kill()  # the fleet is gone; the scan would wait forever

    cancelled = fakescan(stack["env"], "scan", "cancel", str(scan_id))
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.startswith(f"scan {scan_id} cancelled;")
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 1
    assert "state cancelled" in out
    assert f"fakescan: scan {scan_id} cancelled: cancelled by 'fakescan scan cancel'" in err
    with stack["engine"].connect() as connection:
        assert connection.execute(select(Scan.state).where(Scan.id == scan_id)).scalar_one() == "cancelled"
    again = fakescan(stack["env"], "scan", "cancel", str(scan_id))
    assert again.returncode == 0 and again.stdout.strip() == f"scan {scan_id} had already ended: cancelled"
