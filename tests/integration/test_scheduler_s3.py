"""``fakescan scan`` over a real S3 endpoint (moto server) into PostgreSQL, with a stand-in worker.

The stand-in (``RecordingWorker``) writes what the real worker's writer writes: a result per
object and detector on the object's current fingerprint, and the batch's scan items marked done.
"""

import json
import time
from datetime import timedelta

import boto3
import pytest

import scheduler.cli
from fakescan.cli import main
from fakescan.db import migrate
from fakescan.db.engine import make_engine, make_sessionmaker
from fakescan.settings import load_settings
from tests.scheduler_support import RecordingWorker, make_detector_folder, only_named_detectors, png_bytes  # noqa: F401 (only_named_detectors is autouse)

pytestmark = pytest.mark.integration
FIRST_GROUP = 20


@pytest.fixture
def s3(s3_service, s3_bucket, postgres_url, monkeypatch):
    monkeypatch.setenv("FAKESCAN_S3_ENDPOINT_URL", s3_service.url)
    monkeypatch.setenv("FAKESCAN_DATABASE_URL", postgres_url)
    settings = load_settings()
    migrate.upgrade(settings)
    make_detector_folder(settings.home, "tiny", "t1")
    client = boto3.client("s3", endpoint_url=s3_service.url)
    for seed in range(FIRST_GROUP):
        folder = "photos/sub" if seed % 4 == 0 else "photos"
        client.put_object(Bucket=s3_bucket, Key=f"{folder}/img{seed:02d}.png", Body=png_bytes(seed))
    client.put_object(Bucket=s3_bucket, Key="photos/index.html", Body=b"<html>")
    client.put_object(Bucket=s3_bucket, Key="elsewhere/img.png", Body=png_bytes(99))
    return client


@pytest.fixture
def worker(s3, monkeypatch):
    engine = make_engine(load_settings())
    recording = RecordingWorker(make_sessionmaker(engine))
    monkeypatch.setattr(scheduler.cli, "make_dispatcher", lambda settings: recording)
    yield recording
    engine.dispose()


def scan(capsys, *args):
    code = main(["scan", *args, "--detector", "tiny"])
    out = capsys.readouterr().out
    assert code == 0, out
    return int(out.splitlines()[0].split()[1]), out


def status(capsys, scan_id):
    assert main(["status", str(scan_id), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_rerun_rescan_and_changed_content(s3, s3_bucket, worker, capsys):
    source = f"s3://{s3_bucket}/photos"
    first, out = scan(capsys, source, "--batch-size", "8")
    assert [len(ids) for _, _, ids in worker.batches] == [8, 8, 4]
    first_status = status(capsys, first)
    assert first_status["state"] == "finished"
    assert (first_status["listed"], first_status["enqueued"], first_status["done"]) == (FIRST_GROUP,) * 3
    assert (first_status["queued"], first_status["skipped"], first_status["errors"]) == (0, 0, 0)
    assert first_status["source"] == source
    assert first_status["detectors"][0]["name"] == "tiny" and first_status["detectors"][0]["version"] == "t1"
    assert first_status["images_per_second"] > 0

    second, _ = scan(capsys, source)
    assert len(worker.batches) == 3
    assert status(capsys, second)["skipped"] == FIRST_GROUP

    s3.put_object(Bucket=s3_bucket, Key="photos/img03.png", Body=png_bytes(1003))
    third, _ = scan(capsys, source)
    assert status(capsys, third)["enqueued"] == 1
    assert results(capsys, "--scan", str(third))[0]["uri"] == f"s3://{s3_bucket}/photos/img03.png"

    rescan, _ = scan(capsys, source, "--rescan")
    assert status(capsys, rescan)["enqueued"] == FIRST_GROUP


def test_since_enqueues_only_newer_objects(s3, s3_bucket, worker, capsys):
    time.sleep(1.1)  # S3 LastModified has one-second resolution
    for seed in range(3):
        s3.put_object(Bucket=s3_bucket, Key=f"photos/new{seed}.png", Body=png_bytes(500 + seed))
    newest = min(s3.head_object(Bucket=s3_bucket, Key=f"photos/new{seed}.png")["LastModified"] for seed in range(3))
    scan_id, _ = scan(capsys, f"s3://{s3_bucket}/photos", "--since", newest.isoformat())
    got = status(capsys, scan_id)
    assert (got["listed"], got["enqueued"]) == (3, 3)
    uris = {row["uri"] for row in results(capsys, "--scan", str(scan_id))}
    assert uris == {f"s3://{s3_bucket}/photos/new{seed}.png" for seed in range(3)}

    earlier, _ = scan(capsys, f"s3://{s3_bucket}/photos", "--since", (newest - timedelta(days=1)).isoformat())
    assert status(capsys, earlier)["enqueued"] == FIRST_GROUP  # the new three are done already


def results(capsys, *args):
    assert main(["results", "--format", "jsonl", *args]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_results_fields_and_filters(s3, s3_bucket, worker, capsys):
    worker.error_uris = {f"s3://{s3_bucket}/photos/img05.png"}
    scan_id, out = scan(capsys, f"s3://{s3_bucket}/photos")
    assert "results ok 19  error 1" in out

    rows = results(capsys, "--scan", str(scan_id))
    assert len(rows) == FIRST_GROUP
    row = rows[0]
    assert set(row) >= {"uri", "detector", "detector_version", "score", "verdict", "status", "error", "scanned_at",
                        "parts", "scan_id"}
    assert (row["detector"], row["detector_version"], row["scan_id"]) == ("tiny", "t1", scan_id)

    failed = results(capsys, "--status", "error")
    assert [(r["uri"], r["score"], bool(r["error"])) for r in failed] == [(f"s3://{s3_bucket}/photos/img05.png",
                                                                          None, True)]
    sub = results(capsys, "--prefix", f"s3://{s3_bucket}/photos/sub/")
    assert len(sub) == FIRST_GROUP // 4 and all("/photos/sub/" in r["uri"] for r in sub)
    assert len(results(capsys, "--prefix", "photos/sub/")) == len(sub)
    fakes = results(capsys, "--verdict", "fake", "--detector", "tiny")
    assert fakes == [r for r in rows if r["verdict"] == "fake"]
    assert results(capsys, "--detector", "other") == []
    assert len(results(capsys, "--limit", "3")) == 3


def test_database_behind_schema_is_one_line(s3_service, s3_bucket, postgres_url, monkeypatch, capsys):
    monkeypatch.setenv("FAKESCAN_DATABASE_URL", postgres_url)
    monkeypatch.setenv("FAKESCAN_S3_ENDPOINT_URL", s3_service.url)
    make_detector_folder(load_settings().home, "tiny", "t1")
    assert main(["scan", f"s3://{s3_bucket}/photos", "--detector", "tiny"]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fakescan db upgrade" in err[0]


def test_missing_bucket_is_a_source_error(s3_service, monkeypatch, capsys):
    monkeypatch.setenv("FAKESCAN_S3_ENDPOINT_URL", s3_service.url)
    make_detector_folder(load_settings().home, "tiny", "t1")
    assert main(["scan", "s3://no-such-bucket/x", "--detector", "tiny"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-such-bucket" in err[0]


def test_real_in_process_worker_then_rerun_skips(s3, s3_bucket, capsys):
    """No stand-in: the embedded worker (provenance detector) fetches from S3 and writes to PostgreSQL."""
    source = f"s3://{s3_bucket}/photos"
    assert main(["scan", source, "--detector", "provenance", "--batch-size", "8"]) == 0
    out = capsys.readouterr().out
    assert f"listed {FIRST_GROUP}  enqueued {FIRST_GROUP}  skipped 0" in out
    assert f"done {FIRST_GROUP}  error 0  given-up 0  state finished" in out
    assert f"results ok {FIRST_GROUP}  error 0" in out

    assert main(["scan", source, "--detector", "provenance"]) == 0
    assert f"listed {FIRST_GROUP}  enqueued 0  skipped {FIRST_GROUP}" in capsys.readouterr().out

    s3.put_object(Bucket=s3_bucket, Key="photos/img07.png", Body=b"not an image any more")
    assert main(["scan", source, "--detector", "provenance"]) == 0
    out = capsys.readouterr().out
    assert "enqueued 1  skipped 19" in out
    changed = results(capsys, "--prefix", f"{source}/img07.png")
    assert [(r["status"], r["detector"]) for r in changed] == [("error", "provenance")]
