"""Benchmark: how fast the scheduler lists, records, skips and enqueues, against the bare listing.

Run: ``nice -n 10 .venv/bin/python -m tests.benchmarks.bench_scheduler --baseline main [--objects 5000]
[--source local|s3] [--broker] [--rounds 3] [--memory]`` (starts its own PostgreSQL, durable as in production,
and for ``--source s3`` a moto S3 server, like the tests). Prints, for one run:

- the bare listing rate (``Store.list`` over the source: a local folder whose files are hashed,
  or an S3 bucket paged through moto): the baseline a scheduler cannot beat;
- a first scan (upsert every object, skip check, write scan items, dispatch batches of 32 to a
  no-op, or with ``--broker`` through Celery to a Redis the benchmark starts) and a
  re-run where every object is already scanned (all skipped), as objects/s and as a ratio to the
  listing rate, and the statements and commits per 1,000 objects;
- with ``--baseline REV``: the same with the code of git revision ``REV`` (``git archive``), in
  alternating child processes (``--rounds`` each, medians; each on a fresh database), and the
  ratio this code / ``REV``;
- with ``--memory``: the peak Python memory (tracemalloc) of a re-run over a quarter of the
  objects and over all of them with this code: a streamed listing should not grow with the archive.

Not a test: pytest does not collect it.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import tracemalloc
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

FIGURES = (("listing", "bare listing (baseline)"), ("first", "first scan, enqueued"),
           ("rerun", "re-run, all skipped"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=5000)
    parser.add_argument("--source", choices=("local", "s3"), default="local")
    parser.add_argument("--rounds", type=int, default=3, help="child runs per code version (medians)")
    parser.add_argument("--baseline", metavar="REV", help="also measure the code of this git revision")
    parser.add_argument("--memory", action="store_true", help="also the peak memory of re-runs (this code)")
    parser.add_argument("--child", metavar="DATABASE_URL", help=argparse.SUPPRESS)
    parser.add_argument("--uri", help=argparse.SUPPRESS)
    parser.add_argument("--s3-endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--broker", action="store_true",
                        help="enqueue through Celery to a Redis the benchmark starts, not to a no-op")
    parser.add_argument("--broker-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # the code under test first on the path: import nothing of this tree's tests here
        print(json.dumps(measure(args.child, args.uri, args.s3_endpoint, args.memory, args.broker_url)))
        return
    run(args)


def run(args: argparse.Namespace) -> None:
    from tests import services
    from tests.benchmarks.alternating import run_alternating, trees
    from tests.conftest import AWS_TEST_ENV

    os.environ.update(AWS_TEST_ENV)
    postgres = services.start_postgres(durable=True)
    s3 = services.start_s3() if args.source == "s3" else None
    redis = services.start_redis() if args.broker else None
    try:
        with tempfile.TemporaryDirectory(prefix="fakescan-bench-scheduler-") as scratch:
            uri = fill_bucket(s3.url, args.objects) if s3 else fill_folder(Path(scratch) / "files", args.objects)
            endpoint = (["--s3-endpoint", s3.url] if s3 else []) + (["--broker-url", redis.url] if redis else [])

            def child(*extra: str) -> list[str]:
                database = services.create_database(postgres.url, f"bench_{uuid.uuid4().hex[:8]}")
                return ["--child", database, "--uri", uri, *endpoint, *extra]

            code = trees(args.baseline, Path(scratch))
            runs = run_alternating(__file__, code, args.rounds, child)
            memory = run_alternating(__file__, {"memory": code["this code"]}, 1,
                                     lambda: child("--memory"))["memory"][0] if args.memory else None
    finally:
        for service in (s3, redis, postgres):
            if service:
                service.stop()
    report(args, runs, memory)


def fill_folder(folder: Path, count: int) -> str:
    for index in range(count):
        path = folder / f"{index % 50:02d}" / f"{index:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(index.to_bytes(4, "big") * 64)
    return folder.as_uri()


def fill_bucket(endpoint: str, count: int) -> str:
    import boto3

    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket=bucket)
    keys = [f"{'a' if i < count // 4 else 'b'}/{i:08d}.jpg" for i in range(count)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda key: client.put_object(Bucket=bucket, Key=key, Body=key.encode()), keys))
    return f"s3://{bucket}"


def report(args: argparse.Namespace, runs: dict[str, list[dict[str, Any]]], memory: dict[str, Any] | None) -> None:
    from tests.benchmarks.alternating import THIS_CODE, load_range, medians

    found = medians(runs)
    print(f"scheduler: {args.source} source of {found[THIS_CODE]['objects']:.0f} objects, PostgreSQL (durable), "
          f"{'Celery over Redis' if args.broker else 'dispatch to a no-op'}; "
          f"medians of {args.rounds} child runs per code version, alternating")
    print(load_range(runs))
    baseline = found.get(args.baseline) if args.baseline else None
    for key, label in FIGURES:
        figures = found[THIS_CODE]
        line = f"  {label:26} {figures[key]:8.0f} objects/s"
        if key != "listing":
            line += f"  {figures[key] / figures['listing']:.2f}x the listing"
        if baseline:
            line += f"   {args.baseline}: {baseline[key]:8.0f} objects/s"
            if key != "listing":
                line += (f"  {baseline[key] / baseline['listing']:.2f}x the listing"
                         f"  -> now {figures[key] / baseline[key]:.2f}x")
        print(line)
    for key, label in (("statements", "statements per 1,000 objects, first scan"),
                       ("commits", "commits per 1,000 objects, first scan")):
        line = f"  {label:42} {found[THIS_CODE][key]:6.1f}"
        print(line + (f"   {args.baseline}: {baseline[key]:6.1f}" if baseline else ""))
    if memory:
        print(f"  peak memory of a re-run    {memory['peak_quarter'] / 1e6:6.1f} MB over "
              f"{memory['quarter']:.0f} objects, {memory['peak_all'] / 1e6:6.1f} MB over {memory['objects']:.0f}")


def measure(url: str, uri: str, s3_endpoint: str | None, memory: bool, broker_url: str | None) -> dict[str, float]:
    """Runs in a child process, with the code under test first on the path."""
    from sqlalchemy import event, text

    from fakescan.catalog import DetectorRef
    from fakescan.db import migrate
    from fakescan.db.engine import make_engine, make_sessionmaker
    from fakescan.settings import load_settings
    from fakescan.storage import ListFilter, open_store
    from scheduler.scan import ScanRequest, create_scan, run_scan

    with tempfile.TemporaryDirectory(prefix="fakescan-bench-home-") as home:
        settings = load_settings(database_url=url, s3_endpoint_url=s3_endpoint, home=home, broker_url=broker_url)
        migrate.upgrade(settings)
        engine = make_engine(settings)
        sessions = make_sessionmaker(engine)
        every = ListFilter(extensions=())
        counted = {"statements": 0, "commits": 0}

        def count(kind: str) -> Callable[..., None]:
            return lambda *_: counted.__setitem__(kind, counted[kind] + 1)

        event.listen(engine, "before_cursor_execute", count("statements"))
        event.listen(engine, "commit", count("commits"))

        dispatch: Any = lambda *_: None  # noqa: E731
        if broker_url:
            from fakescan.queue import CeleryDispatcher

            dispatch = CeleryDispatcher(settings)

        def scan(prefix: str = "") -> float:
            store = open_store(uri.rstrip("/") + "/" + prefix if prefix else uri, settings)
            request = ScanRequest(store.root, [DetectorRef("bench", "compact-cnn", "1", None)], every, batch_size=32)
            scan_id = create_scan(sessions, request, "bench")
            counted.update(statements=0, commits=0)
            started = time.perf_counter()
            run_scan(sessions, scan_id, store, request, dispatch)
            return time.perf_counter() - started

        started = time.perf_counter()
        listed = sum(1 for _ in open_store(uri, settings).list(every))
        listing = time.perf_counter() - started
        first = scan()
        per_thousand = {key: value * 1000 / listed for key, value in counted.items()}
        with engine.begin() as connection:  # what the workers would have written: one ok result per object
            connection.execute(text(
                "INSERT INTO results (object_id, detector, detector_version, fingerprint, status, score, verdict,"
                " scanned_at) SELECT id, 'bench', '1', fingerprint, 'ok', 0.1, 'real', now() FROM objects"))
            connection.execute(text("UPDATE scan_items SET state = 'done'"))
        rerun = scan()
        figures = {"objects": listed, "listing": listed / listing, "first": listed / first, "rerun": listed / rerun,
                   **per_thousand}
        if memory:
            quarter = "a/" if uri.startswith("s3://") else "00/"
            figures.update(peak_quarter=_peak(lambda: scan(quarter)), peak_all=_peak(scan),
                           quarter=sum(1 for _ in open_store(uri.rstrip("/") + "/" + quarter, settings).list(every)))
        engine.dispose()
    return figures


def _peak(step: Callable[[], Any]) -> int:
    tracemalloc.start()
    try:
        step()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


if __name__ == "__main__":
    main()
