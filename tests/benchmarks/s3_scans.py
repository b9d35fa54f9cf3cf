"""``bench_scan --s3-latency MS [MS ...]``: the next-batch read-ahead where it can pay, on object storage.

A local moto server answers in a millisecond; a real object store takes tens of milliseconds to
its first byte, per request. Here a proxy (tests.fault_proxy, ``latency``) holds every request
that long before passing it to moto, so the workers pay the round trips a real store costs (not
its bandwidth: the bytes still come from this machine, through the proxy).

The same photos, uploaded once, are scanned in rounds that alternate between the configurations
(so a change of the machine's load falls on all of them; medians are compared):

- embedded (``fakescan scan s3://...`` without a broker), read-ahead on and off;
- a Celery worker on the threads pool with one thread, read-ahead on (prefetch multiplier 2) and
  off (``FAKESCAN_READ_AHEAD=false``), and one on the default pool (prefork on CPU, solo on CUDA:
  neither can read ahead): each on a queue of its own, over a real Redis and PostgreSQL, warmed up with a
  first scan (the model loaded) before any figure. A Celery scan's rate is its objects over the
  time from the scan's start to its last batch's commit (both from the ``scans`` row).
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests import services
from tests.chaos_support import WorkerProcess, wait_for
from tests.conftest import AWS_TEST_ENV
from tests.fault_proxy import FaultProxy
from tests.worker_families import WRAPPER

FETCHED_AHEAD = re.compile(r"scan (\d+) batch \d+: .*, (\d+) fetched ahead;")
THREADS = ("--pool", "threads", "--concurrency", "1")
PREFORK = ("--pool", "prefork", "--concurrency", "1")


@dataclass
class Config:
    label: str
    env: dict[str, str]
    worker: tuple[str, ...] | None = None  # None: embedded
    rates: dict[float, list[float]] = field(default_factory=dict)
    fetched_ahead: dict[float, int] = field(default_factory=dict)


DEFAULT_POOL = "Celery default pool x1 (prefork; solo on CUDA)"


def configurations(device: str) -> list[Config]:
    default = ("--pool", "solo", "--concurrency", "1") if device.startswith("cuda") else PREFORK
    return [Config("embedded, read-ahead", {"FAKESCAN_READ_AHEAD": "true"}),
            Config("embedded, no read-ahead", {"FAKESCAN_READ_AHEAD": "false"}),
            Config("Celery threads x1, read-ahead", {"FAKESCAN_READ_AHEAD": "true"}, THREADS),
            Config("Celery threads x1, no read-ahead", {"FAKESCAN_READ_AHEAD": "false"}, THREADS),
            Config(DEFAULT_POOL, {}, default)]


def s3_rows(photos: list[Path], detector: str, latencies: list[float], rounds: int, scratch: Path,
            env: dict[str, str]) -> list[tuple[str, str]]:
    """Rows for bench_scan's table: images/s per configuration and latency, with the ratios that matter."""
    from fakescan.db import migrate
    from fakescan.settings import load_settings

    os.environ.update(AWS_TEST_ENV)
    s3, redis, postgres = services.start_s3(), services.start_redis(), services.start_postgres()
    proxy = FaultProxy(s3.url).start()
    workers: dict[str, WorkerProcess] = {}
    configs = configurations(env.get("FAKESCAN_DEVICE", "cpu"))
    try:
        bucket = upload(s3.url, photos)
        database = services.create_database(postgres.url, f"bench_s3_{uuid.uuid4().hex[:8]}")
        migrate.upgrade(load_settings(database_url=database))
        common = {**AWS_TEST_ENV, **env, "FAKESCAN_SCAN_PROVENANCE": "false", "FAKESCAN_BATCH_SIZE": "32",
                  "FAKESCAN_S3_ENDPOINT_URL": proxy.url}
        broker = {"FAKESCAN_BROKER_URL": redis.url, "FAKESCAN_DATABASE_URL": database, "FAKESCAN_LOG_LEVEL": "INFO"}
        folder = Path(tempfile.mkdtemp(prefix="fakescan-s3-workers-", dir=scratch))
        for number, config in enumerate(configs):
            if config.worker is not None:
                worker_env = worker_environment({**common, **broker, **config.env,
                                                 "FAKESCAN_QUEUE": f"bench-{number}",
                                                 "FAKESCAN_HOME": str(folder / f"home-{number}")})
                workers[config.label] = WorkerProcess(f"w{number}", worker_env, folder, config.worker).start()
        for label, worker in workers.items():
            wait_for(lambda worker=worker: "ready." in worker.text(), f"{label} ready", 180)
            celery_scan(worker, s3.url, bucket, "warm/", detector, 1)  # the model loads here, not in a figure
        seen = {label: fetched_ahead(worker) for label, worker in workers.items()}
        for latency in latencies:
            proxy.latency = latency / 1000
            for _ in range(rounds):
                for config in configs:
                    home = scratch / f"home-{uuid.uuid4().hex[:8]}"  # a fresh database: nothing skipped
                    rate = (embedded_scan(bucket, detector, len(photos), home,
                                          {**common, **config.env}) if config.worker is None
                            else celery_scan(workers[config.label], s3.url, bucket, "photos/", detector,
                                             len(photos)))
                    config.rates.setdefault(latency, []).append(rate)
                    print(f"  s3 {latency:g} ms, {config.label}: {rate:.2f} img/s (load {os.getloadavg()[0]:.1f})",
                          flush=True)
            for label, worker in workers.items():  # the objects fetched ahead at this latency
                total = fetched_ahead(worker)
                by_label(configs)[label].fetched_ahead[latency], seen[label] = total - seen[label], total
    finally:
        for worker in workers.values():
            worker.kill()
        proxy.stop()
        for service in (s3, redis, postgres):
            service.stop()
    return table(configs, latencies, rounds, len(photos), detector, env.get("FAKESCAN_FETCH_CONCURRENCY", "8"))


def worker_environment(overrides: dict[str, str]) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("FAKESCAN_")}
    return {**env, **overrides, "PYTHONUNBUFFERED": "1"}


def upload(s3_url: str, photos: list[Path]) -> str:
    from concurrent.futures import ThreadPoolExecutor

    import boto3

    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    client = boto3.client("s3", endpoint_url=s3_url)
    client.create_bucket(Bucket=bucket)
    items = [(f"photos/{path.name}", path) for path in photos] + [(f"warm/{photos[0].name}", photos[0])]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda item: client.put_object(Bucket=bucket, Key=item[0], Body=item[1].read_bytes()), items))
    return bucket


def embedded_scan(bucket: str, detector: str, count: int, home: Path, env: dict[str, str]) -> float:
    from tests.benchmarks.bench_scan import REPO, scan_rate

    figures: dict[str, Any] = scan_rate(REPO, f"s3://{bucket}/photos/", detector, home,
                                        {**env, "FAKESCAN_HOME": str(home)}, count=count)
    return float(figures["rate"])


def by_label(configs: list[Config]) -> dict[str, Config]:
    return {config.label: config for config in configs}


def celery_scan(worker: WorkerProcess, s3_url: str, bucket: str, prefix: str, detector: str, count: int) -> float:
    """``fakescan scan --rescan`` onto the worker's queue (the listing straight from moto, ``s3_url``);
    images/s from the scan's start to its last commit."""
    scheduler = {**worker.env, "FAKESCAN_S3_ENDPOINT_URL": s3_url}
    completed = subprocess.run([sys.executable, "-c", WRAPPER, "scan", f"s3://{bucket}/{prefix}", "--detector",
                                detector, "--rescan"], env=scheduler, capture_output=True, text=True, timeout=300)
    if completed.returncode != 0:
        raise SystemExit(f"scan failed: {completed.stderr[-2000:]}")
    scan_id = int(completed.stdout.split()[1])
    seconds = scan_seconds(worker.env["FAKESCAN_DATABASE_URL"], scan_id)
    return count / seconds


def scan_seconds(database: str, scan_id: int, timeout: float = 900) -> float:
    from sqlalchemy import create_engine, select

    from fakescan.db.models import Scan

    engine = create_engine(database)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with engine.connect() as connection:
                state, started, finished = connection.execute(
                    select(Scan.state, Scan.started_at, Scan.finished_at).where(Scan.id == scan_id)).one()
            if state != "running" and finished is not None:
                if state != "finished":
                    raise SystemExit(f"scan {scan_id} ended {state}")
                return (finished - started).total_seconds()
            time.sleep(0.1)
    finally:
        engine.dispose()
    raise SystemExit(f"scan {scan_id} did not finish within {timeout:.0f}s")


def fetched_ahead(worker: WorkerProcess) -> int:
    return sum(int(count) for _scan, count in FETCHED_AHEAD.findall(worker.text()))


COMPARED = {"embedded, read-ahead": ("embedded, no read-ahead",),
            "Celery threads x1, read-ahead": ("Celery threads x1, no read-ahead", DEFAULT_POOL),
            "Celery threads x1, no read-ahead": (DEFAULT_POOL,)}


def table(configs: list[Config], latencies: list[float], rounds: int, count: int, detector: str,
          fetchers: str) -> list[tuple[str, str]]:
    rows = [(f"S3 behind a latency proxy: {count} 2 MP JPEGs, {detector}, batch 32, {fetchers} fetch threads, "
             f"medians of {rounds} alternating rounds", "")]
    for latency in latencies:
        median = {config.label: statistics.median(config.rates[latency]) for config in configs}
        for config in configs:
            runs = config.rates[latency]
            ratios = "".join(f", {median[config.label] / median[other]:.2f}x {other}"
                             for other in COMPARED.get(config.label, ()))
            ahead = config.fetched_ahead.get(latency)
            rows.append((f"  {latency:g} ms: {config.label}",
                         f"{median[config.label]:.2f} img/s (runs {min(runs):.2f}-{max(runs):.2f}){ratios}"
                         + (f"; {ahead} objects fetched ahead (worker log)" if ahead is not None else "")))
    return rows
