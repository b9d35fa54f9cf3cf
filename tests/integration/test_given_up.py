"""Item states driven for real: a batch gives up (its object's body is cut off on every read by the
fault proxy), a corrupt upload gets an error row, and ``nightly`` / ``scan resume`` act on them.

The batches run through the real Celery task, eagerly (``scan_batch.apply``): the same retries,
give-up and writer as a worker, without a broker.
"""

from __future__ import annotations

from typing import Any, Iterator

import boto3
import pytest
from sqlalchemy import select

import scheduler.cli
import tests.worker_families  # noqa: F401  (registers test-brightness)
from fakescan.cli import main
from fakescan.db import migrate, scans
from fakescan.db.engine import make_engine, make_sessionmaker
from fakescan.db.models import Result, Scan, StoredObject
from fakescan.settings import load_settings
from tests.fault_proxy import FaultPlan, FaultProxy
from tests.worker_support import detector_folder, image_bytes
from worker import tasks
from worker.runtime import forget_process_runtime, use_settings

pytestmark = pytest.mark.integration
POISON = "photos/poison.png"


class EagerWorker:
    """The scheduler's dispatcher: each batch runs the real Celery task in this process, with the
    scheduler's settings (as a worker started in the same environment)."""

    def __init__(self, settings: Any) -> None:
        use_settings(settings)

    def __call__(self, scan_id: int, batch: int, object_ids: list[int]) -> None:
        tasks.scan_batch.apply(args=(scan_id, object_ids), kwargs={"batch": batch})

    def close(self) -> None:
        forget_process_runtime()


@pytest.fixture
def archive(s3_service: Any, s3_bucket: str, postgres_url: str, monkeypatch: pytest.MonkeyPatch,
            tmp_path: Any) -> Iterator[tuple[FaultProxy, str, Any, str]]:
    proxy = FaultProxy(s3_service.url).start()
    monkeypatch.setenv("FAKESCAN_S3_ENDPOINT_URL", proxy.url)
    monkeypatch.setenv("FAKESCAN_DATABASE_URL", postgres_url)
    monkeypatch.setenv("FAKESCAN_SCAN_PROVENANCE", "false")
    monkeypatch.setenv("FAKESCAN_BATCH_MAX_RETRIES", "1")
    migrate.upgrade(load_settings())
    client = boto3.client("s3", endpoint_url=s3_service.url)
    for seed in range(6):
        client.put_object(Bucket=s3_bucket, Key=f"photos/img{seed}.png", Body=image_bytes(seed))
    client.put_object(Bucket=s3_bucket, Key="photos/corrupt.png", Body=b"\x89PNG\r\n\x1a\nnot really")
    client.put_object(Bucket=s3_bucket, Key=POISON, Body=image_bytes(99) * 20)
    monkeypatch.setattr(scheduler.cli, "make_dispatcher", EagerWorker)
    folder = detector_folder(tmp_path / "detectors", "bright")
    engine = make_engine(load_settings())
    forget_process_runtime()
    try:
        yield proxy, s3_bucket, make_sessionmaker(engine), str(folder)
    finally:
        forget_process_runtime()
        engine.dispose()
        proxy.stop()


def nightly(capsys: Any, bucket: str, detector: str, *extra: str) -> tuple[int, str, str]:
    code = main(["nightly", f"s3://{bucket}/photos/", "--detector", detector, "--batch-size", "2",
                 "--overlap", "0s", *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_given_up_batch_holds_nightly_back_and_bad_input_does_not(archive: Any, capsys: Any) -> None:
    proxy, bucket, sessions, detector = archive
    poison_only = FaultPlan({"truncate": 1.0}, applies=lambda method, path: method == "GET" and path.endswith(POISON))
    proxy.set_plan(poison_only)

    code, out, err = nightly(capsys, bucket, detector)
    scan_id = int(out.splitlines()[0].split()[1])
    assert code == 1
    assert "given-up 2  state failed" in out  # the poison object and its batch mate
    assert f"fakescan: scan {scan_id} failed: batch 4 gave up after 2 attempts: InfrastructureFault" in err
    with sessions() as session:
        assert scans.item_counts(session, scan_id) == {"done": 5, "error": 1, "given-up": 2}
        poison_rows = session.scalars(select(Result.object_id).join(StoredObject, StoredObject.id == Result.object_id)
                                      .where(StoredObject.key == POISON)).all()
    assert poison_rows == [], "a cut-off transfer is never stored as a verdict on the object"
    assert proxy.injected["truncate"] == 2  # one per attempt

    _, _, notes = nightly(capsys, bucket, detector, "--dry-run")
    assert "full scan" in notes  # the failed scan is no cut-off

    proxy.set_plan(None)  # the network heals
    assert main(["scan", "resume", str(scan_id)]) == 0
    resumed = capsys.readouterr().out
    assert "2 given-up objects queued again" in resumed and "done 7  error 1  given-up 0  state finished" in resumed
    with sessions() as session:
        assert session.get(Scan, scan_id).error is None

    # a corrupt upload (an error row) does not hold the cut-off back
    _, _, notes = nightly(capsys, bucket, detector, "--dry-run")
    assert f"last successful scan {scan_id} started" in notes


def test_nightly_tells_a_prefix_from_a_folder(archive: Any, capsys: Any) -> None:
    """``s3://b/p`` also lists ``p2/``: it is not the source ``s3://b/p/``."""
    proxy, bucket, sessions, detector = archive
    boto3.client("s3", endpoint_url=proxy.url).put_object(Bucket=bucket, Key="photos2/extra.png", Body=image_bytes(3))
    code, out, _ = nightly(capsys, bucket, detector)
    assert code == 0
    code = main(["nightly", f"s3://{bucket}/photos", "--detector", detector, "--overlap", "0s"])
    captured = capsys.readouterr()
    assert code == 0 and "full scan" in captured.err
    assert "listed 9  enqueued 1  skipped 8" in captured.out  # photos/ (8, scanned) and photos2/ (1, new)
