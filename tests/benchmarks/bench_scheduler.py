"""Benchmark: how fast the scheduler lists, records and skips, against the bare S3 listing.

Run: ``.venv/bin/python -m tests.benchmarks.bench_scheduler [--objects 5000]`` (starts its own PostgreSQL and
moto S3 server, like the tests). Prints, for one run on this machine:
- the bare listing rate (``Store.list`` paging through the bucket): the baseline;
- a first scan (upsert every object, write scan items, dispatch to a no-op) and a re-run where
  every object is already scanned (all skipped), each as objects/s and as a ratio to the baseline;
- the peak Python memory of a re-run over a quarter of the objects and over all of them
  (tracemalloc, separate runs): a streamed listing should not grow with the archive.
Not a test: pytest does not collect it.
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc
import uuid
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import text

from tests import services
from tests.conftest import AWS_TEST_ENV


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=5000)
    args = parser.parse_args()
    os.environ.update(AWS_TEST_ENV)
    postgres, s3 = services.start_postgres(), services.start_s3()
    try:
        run(args.objects, postgres.url, s3.url)
    finally:
        s3.stop()
        postgres.stop()


def run(count: int, postgres_admin_url: str, s3_url: str) -> None:
    import boto3

    from fakescan.catalog import DetectorRef
    from fakescan.db import migrate
    from fakescan.db.engine import make_engine, make_sessionmaker
    from fakescan.settings import load_settings
    from fakescan.storage import ListFilter, open_store
    from scheduler.scan import ScanRequest, create_scan, run_scan

    url = services.create_database(postgres_admin_url, f"bench_{uuid.uuid4().hex[:8]}")
    settings = load_settings(database_url=url, s3_endpoint_url=s3_url, home="/tmp/fakescan-bench-home")
    migrate.upgrade(settings)
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    client = boto3.client("s3", endpoint_url=s3_url)
    client.create_bucket(Bucket=bucket)
    quarter = count // 4
    keys = [f"{'a' if i < quarter else 'b'}/{i:08d}.jpg" for i in range(count)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda key: client.put_object(Bucket=bucket, Key=key, Body=key.encode()), keys))

    engine = make_engine(settings)
    sessions = make_sessionmaker(engine)
    detector = DetectorRef("bench", "hf-classifier", "1", None)
    every = ListFilter(extensions=())

    def scan(prefix: str = "") -> float:
        store = open_store(f"s3://{bucket}/{prefix}", settings)
        request = ScanRequest(f"s3://{bucket}/{prefix}", [detector], every, batch_size=64)
        scan_id = create_scan(sessions, request, "bench")
        started = time.perf_counter()
        run_scan(sessions, scan_id, store, request, lambda *_: None)
        return time.perf_counter() - started

    started = time.perf_counter()
    listed = sum(1 for _ in open_store(f"s3://{bucket}", settings).list(every))
    listing = time.perf_counter() - started
    first = scan()
    _complete_everything(engine, text)
    rerun = scan()
    peak_quarter, peak_all = _peak(lambda: scan("a/")), _peak(scan)
    engine.dispose()

    print(f"objects {listed}")
    print(f"bare listing       {listed / listing:8.0f} objects/s  (baseline)")
    print(f"first scan         {listed / first:8.0f} objects/s  {listing / first:.2f}x the listing rate")
    print(f"re-run, all skip   {listed / rerun:8.0f} objects/s  {listing / rerun:.2f}x the listing rate")
    print(f"peak memory re-run {peak_quarter / 1e6:6.1f} MB over {quarter} objects, "
          f"{peak_all / 1e6:6.1f} MB over {listed}")


def _complete_everything(engine, text) -> None:  # type: ignore[no-untyped-def]
    """What the workers would have written: one ok result per object on its current content."""
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO results (object_id, detector, detector_version, fingerprint, status, score, verdict,"
            " scanned_at) SELECT id, 'bench', '1', fingerprint, 'ok', 0.1, 'real', now() FROM objects"))
        connection.execute(text("UPDATE scan_items SET state = 'done'"))


def _peak(step) -> int:  # type: ignore[no-untyped-def]
    tracemalloc.start()
    try:
        step()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


if __name__ == "__main__":
    main()
