"""The Celery task around process_batch, run eagerly (no broker): retries, loud failures, pools."""

from __future__ import annotations

from typing import Iterator

import pytest
from celery import signals
from sqlalchemy.exc import OperationalError

import tests.worker_families  # noqa: F401  (registers test-brightness)
from fakescan.db import scans
from fakescan.db.models import Scan, StoredObject
from fakescan.errors import UsageError
from fakescan.settings import load_settings
from tests.services import free_port
from tests.worker_support import detector_folder, image_bytes, ref_entry
from worker import tasks
from worker.celery_app import check_pool, default_pool
from worker.fetch import InfrastructureFault
from worker.pipeline import BatchCrashed
from worker.runtime import forget_process_runtime, process_runtime, use_settings


@pytest.fixture(autouse=True)
def fresh_runtime() -> Iterator[None]:
    """Each test's batches run with the settings of its environment, as a worker started with them."""
    use_settings(load_settings())
    yield
    forget_process_runtime()


def test_an_unreachable_database_is_retried_then_raised(monkeypatch):
    monkeypatch.setenv("FAKESCAN_DATABASE_URL", f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none")
    use_settings(load_settings())
    retries = []

    def count(**_: object) -> None:
        retries.append(1)

    signals.task_retry.connect(count, weak=False)
    try:
        outcome = tasks.scan_batch.apply(args=(1, [1, 2]), kwargs={"batch": 1})
    finally:
        signals.task_retry.disconnect(count)
    assert isinstance(outcome.result, OperationalError)
    assert len(retries) == load_settings().batch_max_retries


def listed_scan(session, detector: dict, batch: int, ids: list[int]) -> int:
    """A scan whose listing is over with one batch enqueued, as the scheduler leaves it."""
    scan_id = scans.create_scan(session, "test", [detector], {})
    scans.start_listing(session, scan_id)
    scans.add_items(session, scan_id, batch, ids)
    scans.finish_listing(session, scan_id)
    return scan_id


def item_states(runtime, scan_id: int) -> dict[str, int]:
    with runtime.sessions() as session:
        return scans.item_counts(session, scan_id)


def test_a_broken_detector_gives_up_the_batch_and_the_scan_fails(tmp_path):
    runtime = process_runtime()  # the embedded SQLite under FAKESCAN_HOME, as the task will see it
    broken = detector_folder(tmp_path / "detectors", "broken", always_raise=True)
    (tmp_path / "archive").mkdir()
    with runtime.sessions.begin() as session:
        ids = []
        for index in range(3):
            path = tmp_path / "archive" / f"{index}.png"
            path.write_bytes(image_bytes(index))
            row = StoredObject(uri=path.as_uri(), store=(tmp_path / "archive").as_uri(), key=path.name,
                               fingerprint=f"test:{index}")
            session.add(row)
            session.flush()
            ids.append(row.id)
        scan_id = listed_scan(session, ref_entry(broken), 1, ids)

    outcome = tasks.scan_batch.apply(args=(scan_id, ids), kwargs={"batch": 1})

    assert isinstance(outcome.result, BatchCrashed)
    assert item_states(runtime, scan_id) == {"given-up": 3}
    with runtime.sessions() as session:
        scan = session.get(Scan, scan_id)
        assert scan.state == "failed" and "batch 1 crashed" in scan.error and "broken" in scan.error


def test_a_fault_that_outlasts_every_retry_gives_up_the_batch(tmp_path):
    runtime = process_runtime()
    (tmp_path / "archive").mkdir()
    looping = tmp_path / "archive" / "loop.png"
    looping.symlink_to(looping)  # reading it raises ELOOP: an OSError about the disk, not the object
    with runtime.sessions.begin() as session:
        row = StoredObject(uri=looping.as_uri(), store=(tmp_path / "archive").as_uri(), key=looping.name,
                           fingerprint="test:loop")
        session.add(row)
        session.flush()
        folder = detector_folder(tmp_path / "detectors", "bright")
        scan_id = listed_scan(session, ref_entry(folder), 4, [row.id])

    outcome = tasks.scan_batch.apply(args=(scan_id, [row.id]), kwargs={"batch": 4})

    assert isinstance(outcome.result, InfrastructureFault)
    assert item_states(runtime, scan_id) == {"given-up": 1}
    with runtime.sessions() as session:
        scan = session.get(Scan, scan_id)
        assert scan.state == "failed"
        attempts = load_settings().batch_max_retries + 1
        assert scan.error.startswith(f"batch 4 gave up after {attempts} attempts: InfrastructureFault")
        assert "loop.png" in scan.error


def test_cuda_workers_never_fork():
    cuda, cpu = load_settings(device="cuda"), load_settings(device="cpu")
    assert default_pool(cuda) == "solo" and default_pool(cpu) == "prefork"
    with pytest.raises(UsageError, match="solo"):
        check_pool("prefork", cuda)
    for pool in ("solo", "threads"):
        check_pool(pool, cuda)
    check_pool("prefork", cpu)


def test_worker_without_a_broker_is_a_one_line_usage_error(capsys):
    from fakescan.cli import main

    assert main(["worker"]) == UsageError.exit_code
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "FAKESCAN_BROKER_URL" in err
