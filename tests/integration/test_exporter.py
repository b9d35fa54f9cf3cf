"""``fakescan exporter`` against real Redis, PostgreSQL and moto S3: the figures it serves are the
queue's real length and the scans' real progress."""

from __future__ import annotations

import urllib.request
import uuid
from typing import Any

import boto3
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fakescan.cli import main
from fakescan.db import migrate
from fakescan.settings import load_settings
from scheduler.exporter import serve
from tests.scheduler_support import make_detector_folder, png_bytes
from tests.services import free_port

pytestmark = pytest.mark.integration
IMAGES = 10
BATCH = 4


def scrape_exporter() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Start the exporter from the environment's settings, scrape it once, stop it."""
    port = free_port()
    server = serve(load_settings(), port, "127.0.0.1")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
    finally:
        server.shutdown()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


@pytest.fixture
def enqueued_scan(s3_service: Any, s3_bucket: str, postgres_url: str, redis_service: Any,
                  monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """A scan whose batches wait in a queue no worker consumes."""
    queue = f"exporter-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("FAKESCAN_S3_ENDPOINT_URL", s3_service.url)
    monkeypatch.setenv("FAKESCAN_DATABASE_URL", postgres_url)
    monkeypatch.setenv("FAKESCAN_BROKER_URL", redis_service.url)
    monkeypatch.setenv("FAKESCAN_QUEUE", queue)
    settings = load_settings()
    migrate.upgrade(settings)
    make_detector_folder(settings.home, "tiny", "t1")
    client = boto3.client("s3", endpoint_url=s3_service.url)
    for seed in range(IMAGES):
        client.put_object(Bucket=s3_bucket, Key=f"in/{seed}.png", Body=png_bytes(seed))
    assert main(["scan", f"s3://{s3_bucket}/in/", "--detector", "tiny", "--batch-size", str(BATCH)]) == 0
    scan_id = int(capsys.readouterr().out.splitlines()[0].split()[1])
    return scan_id, queue, f"s3://{s3_bucket}/in/"


def test_exporter_serves_queue_depth_and_scan_progress(enqueued_scan: tuple[int, str, str]) -> None:
    scan_id, queue, source = enqueued_scan
    metrics = scrape_exporter()
    batches = -(-IMAGES // BATCH)
    assert metrics[("fakescan_queue_depth", (("queue", queue),))] == batches
    assert metrics[("fakescan_broker_up", ())] == 1
    assert metrics[("fakescan_database_up", ())] == 1
    labels = (("scan_id", str(scan_id)), ("source", source))
    assert metrics[("fakescan_scan_listed", labels)] == IMAGES
    assert metrics[("fakescan_scan_items", tuple(sorted(labels + (("state", "queued"),))))] == IMAGES
    assert metrics[("fakescan_scan_items", tuple(sorted(labels + (("state", "done"),))))] == 0
    assert metrics[("fakescan_scans", (("state", "running"),))] == 1


def test_status_shows_the_queue_when_a_broker_is_configured(enqueued_scan: tuple[int, str, str],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    scan_id, queue, _ = enqueued_scan
    assert main(["status", str(scan_id)]) == 0
    batches = -(-IMAGES // BATCH)
    assert f"broker queue {queue}: {batches} batches waiting" in capsys.readouterr().out


def test_an_unreachable_database_or_broker_is_reported_not_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    closed = free_port()
    monkeypatch.setenv("FAKESCAN_DATABASE_URL", f"postgresql+psycopg://nobody@127.0.0.1:{closed}/none")
    monkeypatch.setenv("FAKESCAN_BROKER_URL", f"redis://127.0.0.1:{closed}/0")
    metrics = scrape_exporter()
    assert metrics[("fakescan_database_up", ())] == 0
    assert metrics[("fakescan_broker_up", ())] == 0
    assert not [name for name, _ in metrics if name.startswith("fakescan_scan")]
