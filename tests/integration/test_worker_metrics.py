"""A real ``fakescan worker`` (subprocess) over real Redis, PostgreSQL and moto S3, observed from outside.

- prefork pool, two processes, metrics on FAKESCAN_METRICS_PORT, JSON logs: after a scan with the
  tiny SigLIP checkpoint and the provenance detector over images and corrupt objects, the
  endpoint's counters equal the results table, batch by batch; ``fakescan worker-ping`` answers;
- solo pool (the GPU setup) on a deliberately slow detector: while it runs a batch it cannot
  answer a ping, and ``worker-ping`` still passes because it is busy on a fresh batch; killed,
  its leftover heartbeat does not pass for a live worker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import boto3
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, func, select

from fakescan.db import migrate
from fakescan.db.models import Result, ScanItem
from fakescan.settings import load_settings
from tests import services
from tests.conftest import AWS_TEST_ENV
from tests.tiny_models import build_tiny_siglip_checkpoint
from tests.worker_families import WRAPPER
from tests.worker_support import corrupt_objects, detector_folder, image_bytes

pytestmark = pytest.mark.integration
PROJECT = Path(__file__).resolve().parents[2]
IMAGES = 30
BATCH = 8


@dataclass
class RunningWorker:
    process: subprocess.Popen
    stderr: Path
    port: int

    def stop(self, how: signal.Signals = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, how)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@dataclass
class Stack:
    env: dict[str, str]
    database: str
    bucket: str
    folder: Path

    def fakescan(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", WRAPPER, *args], cwd=PROJECT, env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def start_worker(self, name: str, *args: str) -> RunningWorker:
        port = services.free_port()
        stderr = self.folder / f"{name}.stderr"
        env = dict(self.env, FAKESCAN_METRICS_PORT=str(port),
                   PROMETHEUS_MULTIPROC_DIR=str(self.folder / f"{name}-metrics"))
        with stderr.open("w") as handle:
            process = subprocess.Popen([sys.executable, "-c", WRAPPER, "worker", *args], cwd=PROJECT, env=env,
                                       stdout=subprocess.DEVNULL, stderr=handle, start_new_session=True)
        return RunningWorker(process, stderr, port)

    def upload(self, objects: dict[str, bytes]) -> None:
        client = boto3.client("s3", endpoint_url=self.env["FAKESCAN_S3_ENDPOINT_URL"])
        for key, data in objects.items():
            client.put_object(Bucket=self.bucket, Key=key, Body=data)


@pytest.fixture
def stack(redis_service: Any, postgres_url: str, s3_service: Any, s3_bucket: str, tmp_path: Path) -> Iterator[Stack]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("FAKESCAN_")}
    env.update(AWS_TEST_ENV, FAKESCAN_BROKER_URL=redis_service.url, FAKESCAN_DATABASE_URL=postgres_url,
               FAKESCAN_S3_ENDPOINT_URL=s3_service.url, FAKESCAN_QUEUE=f"metrics-{uuid.uuid4().hex[:8]}",
               FAKESCAN_HOME=str(tmp_path / "home"), FAKESCAN_LOG_JSON="1", OMP_NUM_THREADS="1",
               PYTHONUNBUFFERED="1")
    migrate.upgrade(load_settings(database_url=postgres_url))
    yield Stack(env, postgres_url, s3_bucket, tmp_path)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def first_scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The endpoint's first answer, once the worker has started it."""
    answers = []
    services.wait_until(lambda: answers.append(scrape(port)) is None, "the metrics endpoint", 90)
    return answers[0]


def worker_ping(stack: Stack, node: str) -> subprocess.CompletedProcess[str]:
    """The probe exactly as a container runs it: plain ``fakescan``, which starts without torch."""
    command = "import sys; from fakescan.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", command, "worker-ping", "--node", node, "--timeout", "2"],
                          cwd=PROJECT, env=stack.env, capture_output=True, text=True, timeout=60)


def test_metrics_endpoint_counts_what_the_results_table_holds(stack: Stack) -> None:
    images = {f"photos/{index:03d}.png": image_bytes(index) for index in range(IMAGES)}
    corrupt = {f"photos/{key}": data for key, data in corrupt_objects().items()}
    stack.upload({**images, **corrupt})
    checkpoint = build_tiny_siglip_checkpoint(stack.folder / "tiny-siglip")
    worker = stack.start_worker("prefork", "--pool", "prefork", "--concurrency", "2", "--hostname", "metrics@%h")
    try:
        before = first_scrape(worker.port)
        # listed from the first scrape on, at zero: not an empty page before the first batch
        assert before[("fakescan_batch_seconds_count", ())] == 0
        assert before[("fakescan_stage_seconds_count", (("stage", "inference"),))] == 0
        completed = stack.fakescan("scan", f"s3://{stack.bucket}/photos", "--detector", str(checkpoint),
                                   "--detector", "provenance", "--batch-size", str(BATCH), "--wait")
        assert completed.returncode == 0, completed.stderr + worker.stderr.read_text()
        scan_id = int(completed.stdout.splitlines()[0].split()[1])
        metrics = scrape(worker.port)
        ping = worker_ping(stack, f"metrics@{os.uname().nodename}")
    finally:
        worker.stop()

    engine = create_engine(stack.database)
    with engine.connect() as connection:
        table = {(detector, status, verdict or "none"): count
                 for detector, status, verdict, count in connection.execute(
            select(Result.detector, Result.status, Result.verdict, func.count())
            .where(Result.scan_id == scan_id).group_by(Result.detector, Result.status, Result.verdict))}
        batches = connection.execute(select(func.count(func.distinct(ScanItem.batch)))
                                     .where(ScanItem.scan_id == scan_id)).scalar_one()
    engine.dispose()
    counted = {(dict(labels)["detector"], dict(labels)["status"], dict(labels)["verdict"]): value
               for (name, labels), value in metrics.items() if name == "fakescan_images_scanned_total"}
    assert {key: value for key, value in counted.items() if value} == table
    assert {status for _, status, _ in table} == {"ok", "error"}, "the scan wrote both kinds of row"
    assert metrics[("fakescan_batch_seconds_count", ())] == batches
    assert metrics[("fakescan_batch_objects_sum", ())] == len(images) + len(corrupt)
    for stage in ("fetch", "decode", "inference", "write"):
        assert metrics[("fakescan_stage_seconds_count", (("stage", stage),))] == batches
    for detector in {detector for detector, _, _ in table}:
        # each pool process builds a detector once, on its first batch
        assert 1 <= metrics[("fakescan_model_load_seconds_count", (("detector", detector),))] <= 2

    assert ping.returncode == 0 and "pong" in ping.stdout, ping.stderr
    # FAKESCAN_LOG_JSON=1: every line is a JSON object, Celery's, transformers' and Python warnings included
    log_lines = [line for line in worker.stderr.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in log_lines]
    assert any("celery" in record["logger"] for record in records), "Celery's own logs go through fakescan's"
    assert any(f"scan {scan_id} batch" in record["message"] for record in records)


def test_worker_ping_passes_while_a_solo_worker_is_busy_and_fails_once_it_is_gone(stack: Stack) -> None:
    stack.upload({f"slow/{index}.png": image_bytes(index) for index in range(4)})
    slow = detector_folder(stack.folder / "detectors", "slow-bright", delay_seconds=300)  # busy until the test kills it
    node = f"solo@{os.uname().nodename}"
    worker = stack.start_worker("solo", "--pool", "solo", "--hostname", "solo@%h")
    try:
        services.wait_until(lambda: worker_ping(stack, node).returncode == 0, "pong from the idle worker", 90)
        completed = stack.fakescan("scan", f"s3://{stack.bucket}/slow", "--detector", str(slow),
                                   "--batch-size", "4")
        assert completed.returncode == 0, completed.stderr
        heartbeats = Path(stack.env["FAKESCAN_HOME"]) / "run" / node
        services.wait_until(lambda: any('"busy_since": 1' in path.read_text() for path in heartbeats.glob("*.json")),
                   "busy heartbeat", 60)
        busy = worker_ping(stack, node)
        assert busy.returncode == 0 and "busy on task" in busy.stdout, busy.stdout + busy.stderr
    finally:
        worker.stop(signal.SIGKILL)  # mid-batch: a warm shutdown would wait out the slow detector
    gone = worker_ping(stack, node)
    assert gone.returncode == 1
    assert gone.stderr.count("\n") == 1 and "did not answer a ping" in gone.stderr


def test_two_workers_on_one_host_get_their_own_node_names(stack: Stack) -> None:
    first = stack.start_worker("first", "--pool", "solo")
    second = stack.start_worker("second", "--pool", "solo")
    command = "import sys; from fakescan.cli import main; sys.exit(main(sys.argv[1:]))"

    def ping_default() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", command, "worker-ping", "--timeout", "2"], cwd=PROJECT,
                              env=stack.env, capture_output=True, text=True, timeout=60)

    try:
        names = [f"fakescan-{worker.process.pid}@{os.uname().nodename}" for worker in (first, second)]
        for name in names:
            services.wait_until(lambda node=name: worker_ping(stack, node).returncode == 0, f"pong from {name}", 90)
        ambiguous = ping_default()  # which of the two? the probe must be told
        assert ambiguous.returncode == 2 and ambiguous.stderr.count("\n") == 1, ambiguous.stderr
        assert all(name in ambiguous.stderr for name in names) and "--node" in ambiguous.stderr
        second.stop(signal.SIGKILL)
        alone = ping_default()  # one live worker left: the probe finds it without --node
        assert alone.returncode == 0 and alone.stdout.strip() == f"{names[0]}: pong", alone.stdout + alone.stderr
    finally:
        first.stop()
        second.stop()
