"""Two real Celery workers (subprocesses) over real Redis, PostgreSQL and a moto S3 server.

- an archive of generated images plus corrupt objects, scanned with ``fakescan scan --wait``
  and the tiny SigLIP checkpoint: one row per object, ``ok`` for images, ``error`` with a reason
  for the corrupt ones, and both workers took batches;
- a worker SIGKILLed (its whole process group) in the middle of a batch: the batch is redelivered
  after the visibility timeout and the survivor finishes it; nothing lost, nothing duplicated.

The workers (one prefork, one threads pool) run ``fakescan worker`` with the test-only families
registered (tests.worker_families), so the kill test can use a deliberately slow detector. They are
shared by the module's tests.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import boto3
import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import Engine

from fakescan.db import migrate
from fakescan.db.models import Result, Scan, ScanItem, StoredObject
from fakescan.settings import load_settings
from tests import services
from tests.conftest import AWS_TEST_ENV
from tests.tiny_models import build_tiny_siglip_checkpoint
from tests.worker_families import WRAPPER
from tests.worker_support import CORRUPT_KINDS, corrupt_objects, detector_folder, image_bytes

pytestmark = pytest.mark.integration
PROJECT = Path(__file__).resolve().parents[2]
IMAGES = 240
VISIBILITY_TIMEOUT = 10  # seconds: short, so the killed worker's batch comes back quickly
STARTED = re.compile(r"scan (\d+) batch (\d+): started")


@dataclass
class Worker:
    name: str
    process: subprocess.Popen
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def batches_started(self, scan_id: int) -> list[int]:
        return [int(batch) for scan, batch in STARTED.findall(self.text()) if int(scan) == scan_id]

    def kill(self) -> None:
        """SIGKILL the whole process group: the main process and its pool child alike."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


@dataclass
class Stack:
    env: dict[str, str]
    engine: Engine
    bucket: str
    workers: list[Worker]
    folder: Path

    def fakescan(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", WRAPPER, *args], cwd=PROJECT, env=self.env,
                              capture_output=True, text=True, timeout=timeout)


def start_worker(name: str, env: dict[str, str], folder: Path, *options: str) -> Worker:
    log = folder / f"{name}.log"
    handle = log.open("w")
    process = subprocess.Popen([sys.executable, "-c", WRAPPER, "worker", "--hostname", f"{name}@%h", *options],
                               cwd=PROJECT, env=env, stdout=handle, stderr=subprocess.STDOUT,
                               start_new_session=True)
    handle.close()
    return Worker(name, process, log)


@pytest.fixture(scope="module")
def stack(redis_service, postgres_service, s3_service, tmp_path_factory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("workers")
    database = services.create_database(postgres_service.url, f"w_{uuid.uuid4().hex[:10]}")
    bucket = f"archive-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_service.url, **_aws()).create_bucket(Bucket=bucket)
    env = worker_env(redis_service.url, database, s3_service.url, folder, VISIBILITY_TIMEOUT, batch_budget=7)
    migrate.upgrade(load_settings(database_url=database))
    # one prefork worker (a pool child per batch) and one threads worker running two batches at once
    workers = [start_worker("alpha", env, folder, "--pool", "prefork", "--concurrency", "1"),
               start_worker("beta", env, folder, "--pool", "threads", "--concurrency", "2")]
    engine = create_engine(database)
    try:
        yield Stack(env, engine, bucket, workers, folder)
    finally:
        for worker in workers:
            worker.kill()
        engine.dispose()


def worker_env(broker: str, database: str, s3_url: str, folder: Path, visibility_timeout: int,
               batch_budget: int) -> dict[str, str]:
    """The workers' environment: a queue of their own, a short visibility timeout, a 2 s retry cap."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("FAKESCAN_")}
    env.update(AWS_TEST_ENV, FAKESCAN_BROKER_URL=broker, FAKESCAN_DATABASE_URL=database,
               FAKESCAN_S3_ENDPOINT_URL=s3_url, FAKESCAN_QUEUE=f"test-worker-{uuid.uuid4().hex[:8]}",
               FAKESCAN_VISIBILITY_TIMEOUT=str(visibility_timeout), FAKESCAN_HOME=str(folder / "home"),
               FAKESCAN_RETRY_BACKOFF_MAX="2", FAKESCAN_BATCH_BUDGET=str(batch_budget),
               FAKESCAN_LOG_LEVEL="INFO", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def _aws() -> dict[str, str]:
    return {"aws_access_key_id": AWS_TEST_ENV["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": AWS_TEST_ENV["AWS_SECRET_ACCESS_KEY"],
            "region_name": AWS_TEST_ENV["AWS_DEFAULT_REGION"]}


def upload(stack: Stack, objects: dict[str, bytes]) -> None:
    client = boto3.client("s3", endpoint_url=stack.env["FAKESCAN_S3_ENDPOINT_URL"], **_aws())
    for key, data in objects.items():
        client.put_object(Bucket=stack.bucket, Key=key, Body=data)


def scan_id_of(completed: subprocess.CompletedProcess) -> int:
    assert completed.returncode == 0, completed.stderr
    return int(completed.stdout.splitlines()[0].split()[1])


def rows_by_key(stack: Stack, scan_id: int) -> dict[tuple[str, str], list[tuple]]:
    """(key, detector) -> its result rows (status, error, score, verdict), for every detector of the scan."""
    with stack.engine.connect() as connection:
        detectors = [entry["name"] for entry in connection.execute(
            select(Scan.detectors).where(Scan.id == scan_id)).scalar_one()]
        keys = connection.execute(select(StoredObject.key).join(ScanItem, ScanItem.object_id == StoredObject.id)
                                  .where(ScanItem.scan_id == scan_id)).scalars().all()
        found: dict[tuple[str, str], list[tuple]] = {(key, name): [] for key in keys for name in detectors}
        statement = (select(StoredObject.key, Result.detector, Result.status, Result.error, Result.score,
                            Result.verdict)
                     .join(ScanItem, ScanItem.object_id == StoredObject.id)
                     .join(Result, Result.object_id == StoredObject.id)
                     .where(ScanItem.scan_id == scan_id))
        for key, detector, *row in connection.execute(statement):
            found.setdefault((key, detector), []).append(tuple(row))
    return found


def scan_state(stack: Stack, scan_id: int) -> tuple[str, dict[str, int]]:
    with stack.engine.connect() as connection:
        state = connection.execute(select(Scan.state).where(Scan.id == scan_id)).scalar_one()
        items = dict(connection.execute(select(ScanItem.state, func.count()).where(ScanItem.scan_id == scan_id)
                                        .group_by(ScanItem.state)).all())
    return state, items


def wait_for(check, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} within {timeout:.0f}s")


def test_two_workers_score_an_archive_with_corrupt_objects(stack):
    images = {f"photos/{index:04d}.{'jpg' if index % 3 else 'png'}": image_bytes(index, "JPEG" if index % 3 else "PNG")
              for index in range(IMAGES)}
    corrupt = {f"photos/{key}": data for key, data in corrupt_objects().items()}
    upload(stack, {**images, **corrupt})
    checkpoint = build_tiny_siglip_checkpoint(stack.folder / "tiny-siglip")

    completed = stack.fakescan("scan", f"s3://{stack.bucket}/photos", "--detector", str(checkpoint),
                               "--batch-size", "24", "--wait")
    scan_id = scan_id_of(completed)

    rows = rows_by_key(stack, scan_id)
    assert {key for key, _ in rows} == set(images) | set(corrupt)
    assert all(len(found) == 1 for found in rows.values()), "exactly one row per object and detector"
    empty = [key for key in corrupt if CORRUPT_KINDS[key.removeprefix("photos/")] == "empty"]
    empty_errors = [found[0][1] for (key, _), found in rows.items() if key in empty]
    assert empty_errors == ["empty: the object has 0 bytes"] * 2, "provenance too: decided before any detector"
    for (key, detector), [(status, error, score, verdict)] in rows.items():
        assert (status == "ok" and error is None) or (status == "error" and error and score is None), (key, error)
        if detector != checkpoint.name:
            continue  # provenance, which every scan runs: reads metadata, judges no pixels
        if key in images:
            assert status == "ok" and 0.0 <= score <= 1.0 and verdict in ("fake", "real", "uncertain")
        else:
            assert status == "error" and error.split(":", 1)[0] == CORRUPT_KINDS[key.removeprefix("photos/")], error
    assert scan_state(stack, scan_id) == ("finished", {"done": len(images), "error": len(corrupt)})
    assert all(worker.batches_started(scan_id) for worker in stack.workers), "both workers took batches"


def test_a_worker_killed_mid_batch_loses_nothing_and_duplicates_nothing(stack):
    objects = {f"slow/{index:03d}.png": image_bytes(1000 + index) for index in range(40)}
    upload(stack, objects)
    slow = detector_folder(stack.folder / "detectors", "slow-bright", delay_seconds=1.5)

    scan_id = scan_id_of(stack.fakescan("scan", f"s3://{stack.bucket}/slow", "--detector", str(slow),
                                        "--batch-size", "5"))

    wait_for(lambda: any(worker.batches_started(scan_id) for worker in stack.workers), "a batch started", 60)
    victim = next(worker for worker in stack.workers if worker.batches_started(scan_id))
    survivor = next(worker for worker in stack.workers if worker is not victim)
    in_flight = victim.batches_started(scan_id)[-1]
    victim.kill()
    with stack.engine.connect() as connection:  # proof the kill landed mid-batch: nothing written yet
        states = connection.execute(select(ScanItem.state).where(ScanItem.scan_id == scan_id,
                                                                 ScanItem.batch == in_flight)).scalars().all()
    assert states and set(states) == {"queued"}

    wait_for(lambda: scan_state(stack, scan_id)[0] == "finished", "the scan finished after redelivery", 120)
    assert in_flight in survivor.batches_started(scan_id), "the survivor ran the killed worker's batch"
    assert f"scan {scan_id} batch {in_flight}: redelivered" in survivor.text(), "the redelivery is logged"
    rows = rows_by_key(stack, scan_id)
    assert {key for key, _ in rows} == set(objects) and {name for _, name in rows} >= {slow.name}
    assert [len(found) for found in rows.values()] == [1] * len(rows), "one row per object and detector"
    assert all(found[0][0] == "ok" for (_, name), found in rows.items() if name == slow.name)
    assert scan_state(stack, scan_id) == ("finished", {"done": len(objects)})
