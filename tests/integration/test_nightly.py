"""``fakescan nightly`` over moto S3 and PostgreSQL: each run scans what changed since the start of
the last successful scan of the same source, detectors and filters (a full scan the first time).

The batches go to the stand-in worker of the scheduler tests, which writes what the real
writer writes, so scans finish as they do with workers.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from typing import Any

import boto3
import pytest
from sqlalchemy import update

import scheduler.cli
from fakescan.cli import main
from fakescan.db import migrate
from fakescan.db.engine import make_engine, make_sessionmaker
from fakescan.db.models import Scan
from fakescan.db.scans import as_utc
from fakescan.settings import load_settings
from tests.scheduler_support import RecordingWorker, make_detector_folder, png_bytes

pytestmark = pytest.mark.integration


@pytest.fixture
def archive(s3_service: Any, s3_bucket: str, postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("FAKESCAN_S3_ENDPOINT_URL", s3_service.url)
    monkeypatch.setenv("FAKESCAN_DATABASE_URL", postgres_url)
    settings = load_settings()
    migrate.upgrade(settings)
    make_detector_folder(settings.home, "tiny", "t1")
    make_detector_folder(settings.home, "other", "o1")
    engine = make_engine(settings)
    worker = RecordingWorker(make_sessionmaker(engine))
    monkeypatch.setattr(scheduler.cli, "make_dispatcher", lambda settings: worker)
    yield boto3.client("s3", endpoint_url=s3_service.url), s3_bucket, make_sessionmaker(engine)
    engine.dispose()


def upload(client: Any, bucket: str, seeds: range) -> None:
    time.sleep(1.1)  # S3 stamps whole seconds: keep these uploads clear of the last scan's start
    for seed in seeds:
        client.put_object(Bucket=bucket, Key=f"photos/img{seed:03d}.png", Body=png_bytes(seed))


def nightly(capsys: pytest.CaptureFixture[str], bucket: str, *args: str) -> tuple[int, dict[str, Any], str]:
    code = main(["nightly", f"s3://{bucket}/photos/", "--overlap", "0s", *args])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    scan_id = int(captured.out.splitlines()[0].split()[1])
    assert main(["status", str(scan_id), "--json"]) == 0
    return scan_id, json.loads(capsys.readouterr().out), captured.err


def test_nightly_scans_only_what_changed_since_the_last_successful_run(archive: Any, capsys: Any) -> None:
    client, bucket, _ = archive
    upload(client, bucket, range(0, 6))
    first, status, notes = nightly(capsys, bucket, "--detector", "tiny")
    assert "full scan" in notes
    assert (status["state"], status["listed"], status["enqueued"]) == ("finished", 6, 6)

    upload(client, bucket, range(6, 9))
    second, status, notes = nightly(capsys, bucket, "--detector", "tiny")
    assert f"last successful scan {first} started" in notes
    assert (status["state"], status["listed"], status["enqueued"]) == ("finished", 3, 3)

    third, status, notes = nightly(capsys, bucket, "--detector", "tiny")
    assert f"last successful scan {second} started" in notes
    assert status["listed"] == 0

    # a different detector has never run on this source: everything, from the start
    _, status, notes = nightly(capsys, bucket, "--detector", "other")
    assert "full scan" in notes and status["listed"] == 9


def dry_run_notes(capsys: pytest.CaptureFixture[str], bucket: str, *args: str) -> str:
    assert main(["nightly", f"s3://{bucket}/photos/", "--detector", "tiny", "--dry-run", *args]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing started
    return captured.err


def test_a_scan_not_finished_is_not_a_success(archive: Any, capsys: Any) -> None:
    """A given-up batch, driven for real, is in tests/integration/test_given_up.py."""
    client, bucket, sessions = archive
    upload(client, bucket, range(0, 4))
    first, _, _ = nightly(capsys, bucket, "--detector", "tiny")
    upload(client, bucket, range(4, 6))
    second, status, _ = nightly(capsys, bucket, "--detector", "tiny")
    assert status["enqueued"] == 2
    assert f"last successful scan {second} started" in dry_run_notes(capsys, bucket)
    with sessions.begin() as session:  # the second run is still running
        session.execute(update(Scan).where(Scan.id == second).values(state="running", finished_at=None))
    assert f"last successful scan {first} started" in dry_run_notes(capsys, bucket)


def test_the_cut_off_is_the_last_success_start_less_the_overlap(archive: Any, capsys: Any) -> None:
    client, bucket, sessions = archive
    upload(client, bucket, range(0, 2))
    first, _, _ = nightly(capsys, bucket, "--detector", "tiny")
    with sessions() as session:
        started = as_utc(session.get(Scan, first).started_at)
    notes = dry_run_notes(capsys, bucket, "--overlap", "2h")
    cutoff = datetime.fromisoformat(notes.split("--since ")[1].split()[0])
    assert cutoff == started - timedelta(hours=2)
    # listing only .png is not how the first scan listed: no cut-off applies
    notes = dry_run_notes(capsys, bucket, "--ext", ".png")
    assert "full scan" in notes and "--since" not in notes
