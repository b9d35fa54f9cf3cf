"""``fakescan scan`` / ``status`` / ``results`` on the embedded SQLite default, and their error lines."""

import json
import os
import re
import subprocess
import sys

import pytest

import scheduler.cli
from fakescan.cli import main
from fakescan.db.engine import make_engine, make_sessionmaker
from fakescan.errors import SourceError, UsageError
from fakescan.settings import load_settings
from tests.scheduler_support import RecordingWorker, make_detector_folder, only_named_detectors, png_bytes  # noqa: F401 (only_named_detectors is autouse)
from tests.services import free_port


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fakescan.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


def assert_one_error_line(completed: subprocess.CompletedProcess, exit_code: int, text: str) -> None:
    assert completed.returncode == exit_code, completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert lines[0].startswith("fakescan: error:") and text in lines[0]
    assert "Traceback" not in completed.stderr


@pytest.fixture
def detector():
    return make_detector_folder(load_settings().home, "tiny", "t1")


def test_unknown_detector(detector, tmp_path):
    assert_one_error_line(run_cli("scan", str(tmp_path), "--detector", "nope"), UsageError.exit_code,
                          "known: cifake, default, provenance, tiny")


def test_malformed_url(detector):
    assert_one_error_line(run_cli("scan", "s3:/x", "--detector", "tiny"), UsageError.exit_code, "malformed URL")


def test_missing_folder(detector, tmp_path):
    completed = run_cli("scan", str(tmp_path / "absent"), "--detector", "tiny")
    assert_one_error_line(completed, SourceError.exit_code, "no such folder")


def test_unreachable_bucket(detector):
    closed = f"http://127.0.0.1:{free_port()}"
    completed = run_cli("scan", "s3://bucket/prefix", "--detector", "tiny", FAKESCAN_S3_ENDPOINT_URL=closed)
    assert_one_error_line(completed, SourceError.exit_code, "cannot reach S3")


def test_bad_since_and_batch_size(detector, tmp_path):
    assert_one_error_line(run_cli("scan", str(tmp_path), "--detector", "tiny", "--since", "soon"),
                          UsageError.exit_code, "--since")
    assert_one_error_line(run_cli("scan", str(tmp_path), "--detector", "tiny", "--batch-size", "0"),
                          UsageError.exit_code, "--batch-size")


def test_status_of_unknown_scan():
    assert_one_error_line(run_cli("status", "42"), UsageError.exit_code, "no scan with id 42")


def test_scheduler_queries_and_api_do_not_import_torch():
    code = ("import sys, fakescan.cli, scheduler.cli, scheduler.scan, scheduler.progress, fakescan.query_cli, "
            "fakescan.db.queries, fakescan.api.app, fakescan.api.cli; fakescan.cli.build_parser(); "
            "from fastapi.testclient import TestClient; from fakescan.settings import load_settings; "
            "client = TestClient(fakescan.api.app.create_app(load_settings())); "
            "assert client.get('/api/v1/objects').status_code == 200; "
            "assert client.get('/gallery').status_code == 200; "
            "heavy = sorted(m for m in ('torch', 'transformers', 'worker.detectors') if m in sys.modules); "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.fixture
def archive(tmp_path):
    root = tmp_path / "archive"
    (root / "sub").mkdir(parents=True)
    for seed in range(9):
        (root / ("sub" if seed % 3 == 0 else "") / f"img{seed}.png").write_bytes(png_bytes(seed))
    (root / "notes.txt").write_text("skipped by the extension filter")
    return root


@pytest.fixture
def worker(monkeypatch):
    """Stands in for the embedded in-process worker: records batches and writes results."""
    recording = RecordingWorker(make_sessionmaker(make_engine(load_settings())),
                                error_uris=set())
    monkeypatch.setattr(scheduler.cli, "make_dispatcher", lambda settings: recording)
    return recording


def scan_id_of(output: str) -> int:
    first = output.splitlines()[0].split()
    assert first[0] == "scan"
    return int(first[1])


def test_embedded_scan_then_rerun_skips_everything(archive, detector, worker, capsys):
    assert main(["scan", str(archive), "--detector", "tiny", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    first = scan_id_of(out)
    assert [len(ids) for _, _, ids in worker.batches] == [4, 4, 1]
    assert [batch for _, batch, _ in worker.batches] == [1, 2, 3]
    assert "listed 9  enqueued 9  skipped 0" in out
    assert f"database {load_settings().home / 'fakescan.db'}" in out

    assert main(["scan", archive.as_uri(), "--detector", "tiny"]) == 0
    out = capsys.readouterr().out
    assert scan_id_of(out) == first + 1
    assert len(worker.batches) == 3  # nothing new was enqueued
    assert "listed 9  enqueued 0  skipped 9" in out

    assert main(["status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["scan_id"] == first + 1 and status["state"] == "finished"
    assert (status["queued"], status["done"], status["skipped"], status["errors"]) == (0, 0, 9, 0)


def test_changed_file_and_rescan(archive, detector, worker, capsys):
    assert main(["scan", str(archive), "--detector", "tiny"]) == 0
    (archive / "img1.png").write_bytes(png_bytes(100))
    assert main(["scan", str(archive), "--detector", "tiny"]) == 0
    _, _, rescanned = worker.batches[-1]
    assert len(rescanned) == 1
    assert main(["scan", str(archive), "--detector", "tiny", "--rescan", "--glob", "sub/*"]) == 0
    assert len(worker.batches[-1][2]) == 3
    capsys.readouterr()


def test_results_filters_and_formats(archive, detector, worker, capsys):
    worker.error_uris = {(archive / "img2.png").as_uri()}
    assert main(["scan", str(archive), "--detector", "tiny"]) == 0
    capsys.readouterr()

    assert main(["results", "--format", "jsonl"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 9
    for field in ("uri", "detector", "detector_version", "score", "verdict", "status", "error", "scanned_at",
                  "parts", "scan_id"):
        assert all(field in row for row in rows)
    errors = [row for row in rows if row["status"] == "error"]
    assert [row["uri"] for row in errors] == [(archive / "img2.png").as_uri()]
    assert errors[0]["error"] and errors[0]["score"] is None

    # the tiny detector's scores hash the file's path: filter at the median so both sides are non-empty
    threshold = sorted(row["score"] for row in rows if row["status"] == "ok")[4]
    assert main(["results", "--format", "jsonl", "--status", "ok", "--min-score", str(threshold)]) == 0
    high = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert high and all(row["score"] >= threshold and row["status"] == "ok" for row in high)
    assert len(high) == sum(1 for row in rows if row["status"] == "ok" and row["score"] >= threshold)

    assert main(["results", "--format", "csv", "--prefix", "sub/"]) == 0
    csv_lines = capsys.readouterr().out.splitlines()
    assert csv_lines[0].startswith("uri,detector,detector_version,score,verdict")
    assert len(csv_lines) == 1 + 3

    assert main(["results", "--prefix", str(archive / "sub"), "--format", "table", "--limit", "2"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["VERDICT", "SCORE", "STATUS"] and len(table) == 1 + 2


def test_results_table_aligns_long_detector_names(archive, detector, worker, capsys):
    long_name = make_detector_folder(load_settings().home, "a-detector-name-longer-than-the-old-column", "2026-12-01")
    assert main(["scan", str(archive), "--detector", "tiny", "--detector", str(long_name)]) == 0
    capsys.readouterr()
    assert main(["results", "--format", "table"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert len(rows) == 2 * 9
    assert {row.split()[3] for row in rows} == {"tiny@t1", "a-detector-name-longer-than-the-old-column@2026-12-01"}
    # SCANNED and URI start in the same column on every line, whatever the detector's name
    scanned, uri = header.index("SCANNED"), header.index("URI")
    table = "\n".join([header, *rows])
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ", row[scanned:]) for row in rows), table
    assert all(row[uri:].startswith("file://") for row in rows), table
