"""Broker mode: ``fakescan scan`` sends batches of object ids to real Redis; ``--wait`` follows them.

The consumer here reads the Celery messages off Redis and completes them like the worker's
writer does, so this checks the message contract (task name, args, batch) without a model.
"""

import base64
import json
import threading
import uuid

import pytest
import redis

from fakescan.cli import main
from fakescan.db import migrate
from fakescan.db.engine import make_engine, make_sessionmaker
from fakescan.queue import SCAN_BATCH_TASK
from fakescan.settings import load_settings
from tests.scheduler_support import RecordingWorker, make_detector_folder, only_named_detectors, png_bytes  # noqa: F401 (only_named_detectors is autouse)
from tests.services import free_port

pytestmark = pytest.mark.integration
IMAGES = 10


@pytest.fixture
def broker(redis_service, postgres_url, tmp_path, monkeypatch):
    queue = f"test-scheduler-{uuid.uuid4().hex[:8]}"  # private queue: no other test's worker takes these
    monkeypatch.setenv("FAKESCAN_BROKER_URL", redis_service.url)
    monkeypatch.setenv("FAKESCAN_QUEUE", queue)
    monkeypatch.setenv("FAKESCAN_DATABASE_URL", postgres_url)
    settings = load_settings()
    migrate.upgrade(settings)
    make_detector_folder(settings.home, "tiny", "t1")
    client = redis.Redis.from_url(redis_service.url)
    yield client, queue
    client.delete(queue)
    client.close()


@pytest.fixture
def archive(tmp_path):
    root = tmp_path / "archive"
    root.mkdir()
    for seed in range(IMAGES):
        (root / f"img{seed}.png").write_bytes(png_bytes(seed))
    return root


def take_batch(client: redis.Redis, queue: str, timeout: float = 0.5) -> tuple[int, list[int], int] | None:
    popped = client.brpop([queue], timeout=timeout)
    if popped is None:
        return None
    message = json.loads(popped[1])
    assert message["headers"]["task"] == SCAN_BATCH_TASK
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    scan_id, object_ids = args
    return scan_id, object_ids, kwargs["batch"]


def complete(worker: RecordingWorker, batch: tuple[int, list[int], int]) -> None:
    scan_id, object_ids, number = batch
    worker(scan_id, number, object_ids)


def test_scan_enqueues_batches_then_status_follows_the_worker(broker, archive, capsys):
    client, queue = broker
    assert main(["scan", str(archive), "--detector", "tiny", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out.splitlines()
    scan_id = int(out[0].split()[1])
    assert f"follow with: fakescan status {scan_id}" in out

    assert main(["status", "--json"]) == 0
    waiting = json.loads(capsys.readouterr().out)
    assert (waiting["scan_id"], waiting["state"]) == (scan_id, "queued")
    assert (waiting["queued"], waiting["done"], waiting["enqueued"]) == (IMAGES, 0, IMAGES)
    assert waiting["eta_seconds"] is None and waiting["images_per_second"] is None

    engine = make_engine(load_settings())
    worker = RecordingWorker(make_sessionmaker(engine))
    batches = [take_batch(client, queue) for _ in range(3)]
    assert [(b[0], len(b[1]), b[2]) for b in batches] == [(scan_id, 4, 1), (scan_id, 4, 2), (scan_id, 2, 3)]
    assert client.llen(queue) == 0

    complete(worker, batches[0])
    assert main(["status", str(scan_id), "--json"]) == 0
    running = json.loads(capsys.readouterr().out)
    assert (running["state"], running["done"], running["queued"]) == ("running", 4, IMAGES - 4)
    assert running["images_per_second"] > 0 and running["eta_seconds"] > 0

    for batch in batches[1:]:
        complete(worker, batch)
    assert main(["status", str(scan_id)]) == 0
    assert capsys.readouterr().out.splitlines()[0].split()[:3] == ["scan", str(scan_id), "finished"]
    engine.dispose()


def test_wait_follows_workers_to_the_end(broker, archive, capsys):
    client, queue = broker
    engine = make_engine(load_settings())
    worker, stop = RecordingWorker(make_sessionmaker(engine)), threading.Event()

    def consume() -> None:
        while not stop.is_set():
            batch = take_batch(client, queue, timeout=0.2)
            if batch is not None:
                complete(worker, batch)

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    try:
        assert main(["scan", str(archive), "--detector", "tiny", "--batch-size", "3", "--wait"]) == 0
    finally:
        stop.set()
        consumer.join(timeout=10)
        engine.dispose()
    out = capsys.readouterr().out
    assert f"done {IMAGES}  error 0  given-up 0  state finished" in out
    assert f"results ok {IMAGES}  error 0" in out
    assert len(worker.batches) == 4


def test_wait_timeout_gives_up_waiting_not_the_scan(broker, archive, capsys):
    """Nobody consumes the queue: --wait stops after its timeout, exit 1, the scan still queued."""
    code = main(["scan", str(archive), "--detector", "tiny", "--batch-size", "5", "--wait", "--wait-timeout", "1s"])
    captured = capsys.readouterr()
    scan_id = int(captured.out.splitlines()[0].split()[1])
    assert code == 1
    assert "done 0  error 0  given-up 0  state queued" in captured.out
    assert captured.err.strip() == (f"fakescan: scan {scan_id} is still queued after --wait-timeout; "
                                    f"follow with: fakescan status {scan_id}")
    assert main(["status", str(scan_id), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["queued"] == IMAGES


def test_bad_wait_timeout_is_a_usage_error(broker, archive, capsys):
    assert main(["scan", str(archive), "--detector", "tiny", "--wait", "--wait-timeout", "soon"]) == 2
    assert capsys.readouterr().err.strip() == ("fakescan: error: bad --wait-timeout 'soon': use a positive age "
                                               "like 90m, 6h or 1d")


def test_unreachable_broker_fails_before_creating_a_scan(broker, archive, monkeypatch, capsys):
    monkeypatch.setenv("FAKESCAN_BROKER_URL", f"redis://127.0.0.1:{free_port()}/0")
    assert main(["scan", str(archive), "--detector", "tiny"]) == 5
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot reach the broker" in err[0]
    assert main(["status"]) == 2
    assert "no scans yet" in capsys.readouterr().err


def test_wait_timeout_summary_counts_only_this_scans_rows(broker, archive, capsys):
    """A --rescan nobody works on yet: the first scan's result rows and verdicts are not its outcomes."""
    client, queue = broker
    engine = make_engine(load_settings())
    worker = RecordingWorker(make_sessionmaker(engine))
    assert main(["scan", str(archive), "--detector", "tiny", "--batch-size", "5"]) == 0
    while (batch := take_batch(client, queue)) is not None:
        complete(worker, batch)
    engine.dispose()
    assert main(["verdicts", "compute"]) == 0
    capsys.readouterr()

    code = main(["scan", str(archive), "--detector", "tiny", "--rescan", "--wait", "--wait-timeout", "1s"])
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert "results ok 0  error 0" in out, out
    assert not any(line.startswith("  tiny:") for line in out), out
    assert any(line.startswith("verdicts fake 0  real 0  uncertain 0  none 0") for line in out), out
