"""Next-batch read-ahead on a real Celery worker (threads pool, one thread) over real Redis,
PostgreSQL and a moto S3 server.

- a multi-batch S3 scan: every object gets exactly one row per detector, and the batches after
  the first found their objects fetched ahead (the worker's batch summary says how many);
- a worker SIGKILLed while it runs one batch and holds the next one read ahead: both batches are
  unacknowledged (the reconciler sees them in the broker), come back after the visibility
  timeout, and the worker started in its place scores them: nothing lost, nothing duplicated;
- ``FAKESCAN_READ_AHEAD=false``: the worker holds one batch at a time and reads nothing ahead.

The worker helpers are tests/integration/test_worker.py's.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Iterator

import boto3
import pytest
from sqlalchemy import create_engine, select

from fakescan.db import migrate
from fakescan.db.models import ScanItem
from fakescan.queue import UNACKED_HASH, batch_of_message, batches_in_broker, redis_client
from fakescan.settings import Settings, load_settings
from tests import services
from tests.integration import test_worker as workers
from tests.worker_support import detector_folder, image_bytes

pytestmark = pytest.mark.integration
# the held batch waits for the running one: the timeout covers the retry wait and two budgets (2 + 2 x 4 < 12)
VISIBILITY_TIMEOUT = 12
SUMMARY = re.compile(r"scan (\d+) batch (\d+): \d+ objects, .*skipped(?:, (\d+) fetched ahead)?;")
FETCHING = re.compile(r"scan (\d+) batch (\d+): fetching (\d+) objects ahead")


def fetched_ahead(worker: workers.Worker, scan_id: int) -> dict[int, int]:
    """Batch -> objects it found fetched ahead, from the worker's batch summaries."""
    return {int(batch): int(ahead or 0) for scan, batch, ahead in SUMMARY.findall(worker.text())
            if int(scan) == scan_id}


def unacknowledged(stack: workers.Stack, scan_id: int) -> set[int]:
    """Batches of the scan a worker has received and not acknowledged (kombu's unacked hash)."""
    client = redis_client(settings_of(stack))
    try:
        messages = [json.loads(raw) for raw in client.hvals(UNACKED_HASH)]
    finally:
        client.close()
    queue = stack.env["FAKESCAN_QUEUE"]
    found = {batch_of_message(message) for message, _exchange, routing_key in messages if routing_key == queue}
    return {batch for scan, batch in filter(None, found) if scan == scan_id}


def settings_of(stack: workers.Stack) -> Settings:
    return load_settings(broker_url=stack.env["FAKESCAN_BROKER_URL"], queue=stack.env["FAKESCAN_QUEUE"])


def ahead_started(worker: workers.Worker, scan_id: int) -> list[int]:
    return [int(batch) for scan, batch, _ in FETCHING.findall(worker.text()) if int(scan) == scan_id]


@pytest.fixture(scope="module")
def stack(redis_service, postgres_service, s3_service, tmp_path_factory) -> Iterator[workers.Stack]:
    folder = tmp_path_factory.mktemp("read-ahead")
    database = services.create_database(postgres_service.url, f"ra_{uuid.uuid4().hex[:10]}")
    bucket = f"ahead-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_service.url, **workers._aws()).create_bucket(Bucket=bucket)
    env = workers.worker_env(redis_service.url, database, s3_service.url, folder, VISIBILITY_TIMEOUT, batch_budget=4)
    migrate.upgrade(load_settings(database_url=database))
    engine = create_engine(database)
    stack = workers.Stack(env, engine, bucket, [], folder)
    try:
        yield stack
    finally:
        for worker in stack.workers:
            worker.kill()
        engine.dispose()


def start(stack: workers.Stack, name: str, **env: str) -> workers.Worker:
    worker = workers.start_worker(name, {**stack.env, **env}, stack.folder, "--pool", "threads", "--concurrency", "1")
    stack.workers.append(worker)
    workers.wait_for(lambda: "ready." in worker.text() or worker.process.poll() is not None, f"{name} ready", 90)
    assert worker.process.poll() is None, worker.text()
    return worker


def stop(stack: workers.Stack, worker: workers.Worker) -> None:
    worker.kill()
    stack.workers.remove(worker)


def scan(stack: workers.Stack, prefix: str, count: int, detector: Path, batch_size: int = 5) -> tuple[int, set[str]]:
    objects = {f"{prefix}/{index:03d}.png": image_bytes(3000 + index) for index in range(count)}
    workers.upload(stack, objects)
    completed = stack.fakescan("scan", f"s3://{stack.bucket}/{prefix}", "--detector", str(detector),
                               "--batch-size", str(batch_size))
    return workers.scan_id_of(completed), set(objects)


def assert_one_row_each(stack: workers.Stack, scan_id: int, keys: set[str], detector: Path) -> None:
    rows = workers.rows_by_key(stack, scan_id)
    assert {key for key, _ in rows} == keys and {name for _, name in rows} >= {detector.name}
    assert [len(found) for found in rows.values()] == [1] * len(rows), "one row per object and detector"
    assert all(found[0][0] == "ok" for (_, name), found in rows.items() if name == detector.name)
    assert workers.scan_state(stack, scan_id) == ("finished", {"done": len(keys)})


def test_a_multi_batch_s3_scan_fetches_each_next_batch_ahead(stack):
    worker = start(stack, "reader")
    assert "read-ahead on" in worker.text()
    detector = detector_folder(stack.folder / "detectors", "paced", delay_seconds=0.5)
    try:
        scan_id, keys = scan(stack, "multi", 30, detector)
        workers.wait_for(lambda: workers.scan_state(stack, scan_id)[0] == "finished", "the scan finished", 120)
        assert_one_row_each(stack, scan_id, keys, detector)
        found = fetched_ahead(worker, scan_id)
        assert sorted(found) == list(range(1, 7)), worker.text()
        assert found[1] == 0, "the first batch had nothing before it to be fetched during"
        # each batch read ahead was the one that ran next, and took every object fetched for it
        started = ahead_started(worker, scan_id)
        assert started and all(found[batch] == 5 for batch in started), worker.text()
        assert len(started) >= 4, f"batches 2-6 are held while the one before runs: {started}"
    finally:
        stop(stack, worker)


def test_a_worker_killed_holding_a_batch_read_ahead_loses_nothing_and_duplicates_nothing(stack):
    victim = start(stack, "victim")
    detector = detector_folder(stack.folder / "detectors", "slow", delay_seconds=3)
    scan_id, keys = scan(stack, "killed", 20, detector)
    workers.wait_for(lambda: ahead_started(victim, scan_id), "a batch read ahead", 60)
    ahead = ahead_started(victim, scan_id)[0]
    running = victim.batches_started(scan_id)[-1]
    assert unacknowledged(stack, scan_id) == {running, ahead}, "the worker holds both, unacknowledged"
    assert {(scan_id, running), (scan_id, ahead)} <= batches_in_broker(settings_of(stack)), "the reconciler's view"
    stop(stack, victim)
    with stack.engine.connect() as connection:  # nothing of either batch was written
        states = connection.execute(select(ScanItem.state).where(ScanItem.scan_id == scan_id,
                                                                 ScanItem.batch.in_([running, ahead]))).scalars().all()
    assert len(states) == 10 and set(states) == {"queued"}

    survivor = start(stack, "survivor")
    try:
        workers.wait_for(lambda: workers.scan_state(stack, scan_id)[0] == "finished", "the scan finished", 120)
        assert_one_row_each(stack, scan_id, keys, detector)
        for batch in (running, ahead):
            assert batch in survivor.batches_started(scan_id)
            assert f"scan {scan_id} batch {batch}: redelivered" in survivor.text()
        assert ahead not in victim.batches_started(scan_id), "the batch read ahead never started on the victim"
    finally:
        stop(stack, survivor)


def test_read_ahead_off_holds_one_batch_and_fetches_nothing_ahead(stack):
    worker = start(stack, "plain", FAKESCAN_READ_AHEAD="false")
    assert "read-ahead off: FAKESCAN_READ_AHEAD=false" in worker.text()
    detector = detector_folder(stack.folder / "detectors", "paced-off", delay_seconds=1)
    try:
        scan_id, keys = scan(stack, "off", 15, detector)
        workers.wait_for(lambda: len(worker.batches_started(scan_id)) >= 2, "the second batch started", 60)
        # the running batch alone (batch 1's ack may land an instant after batch 2 started)
        workers.wait_for(lambda: unacknowledged(stack, scan_id) == {2}, "the worker holding batch 2 only", 5)
        workers.wait_for(lambda: workers.scan_state(stack, scan_id)[0] == "finished", "the scan finished", 120)
        assert_one_row_each(stack, scan_id, keys, detector)
        assert set(fetched_ahead(worker, scan_id).values()) == {0} and not ahead_started(worker, scan_id)
    finally:
        stop(stack, worker)
