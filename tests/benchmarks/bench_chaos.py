"""Benchmark: a scan under faults ends right. Two real workers, 2,000 objects, and on a schedule:
a worker SIGKILLed (and started again), Redis killed and restarted (with its append-only file),
PostgreSQL stopped for 30 s, and S3 answering 503s and cutting bodies short (tests.fault_proxy
between the workers and moto).

Run: ``nice -n 10 .venv/bin/python -m tests.benchmarks.bench_chaos [--objects 2000] [--pools prefork threads]
[--faults kill]``. ``--pools``: the workers' pool, one fault-free and one faulty run per pool
(``threads`` runs one thread per worker with the next-batch read-ahead, so each worker holds two
batches); ``--faults kill``: the worker SIGKILL (and restart) only, so every redelivery counted is
a batch the killed worker held. Starts its
own Redis, PostgreSQL and moto S3 on 127.0.0.1, scans once without faults (the baseline) and once
under the schedule, each with ``fakescan scan --wait`` (whose reconciler runs meanwhile), and
prints for each run: objects lost, duplicate result rows, batches started more than once (and
why: retries after a fault, redeliveries, reconciler re-enqueues), error rows caused by faults,
the final scan state, the wall time, and the faults injected. The detector is the tiny
``test-brightness`` family (decodes every image), so a run takes a minute or two.
Not a test: pytest does not collect it.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tests import services
from tests.chaos_support import PostgresServer, RedisServer, WorkerProcess, fakescan_background, wait_for
from tests.conftest import AWS_TEST_ENV
from tests.fault_proxy import FaultPlan, FaultProxy
from tests.worker_support import corrupt_objects, detector_folder, image_bytes

BATCH = 20
S3_FAULTS = {"503": 0.04, "truncate": 0.04, "reset": 0.01}
POOLS = {"prefork": ("--pool", "prefork", "--concurrency", "1"), "threads": ("--pool", "threads", "--concurrency", "1")}
FAULTS = {"all": "chaos", "kill": "a worker killed"}
FETCHED_AHEAD = re.compile(r"scan (\d+) batch \d+: .*, (\d+) fetched ahead;")
RETRIED = re.compile(r"scan (\d+) batch (\d+): .* \(attempt (\d+) of")
REQUEUED = re.compile(r"scan (\d+) batch (\d+): neither in the broker nor running")


@dataclass
class Stack:
    redis: RedisServer
    postgres: PostgresServer
    s3: services.Service
    proxy: FaultProxy
    folder: Path


@dataclass
class Outcome:
    label: str
    state: str = "?"
    wall_seconds: float = 0.0
    lost: int = 0
    duplicate_rows: int = 0
    fault_error_rows: int = 0
    bad_input_rows: int = 0
    expected_bad_input: int = 0
    batches: int = 0
    batches_started_twice: int = 0
    fetched_ahead: int = 0
    retried: int = 0
    redelivered: int = 0
    requeued: int = 0
    events: list[str] = field(default_factory=list)
    injected: Counter[str] = field(default_factory=Counter)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds the detector spends per batch")
    parser.add_argument("--pools", nargs="+", choices=POOLS, default=["prefork"])
    parser.add_argument("--faults", choices=("all", "kill"), default="all")
    args = parser.parse_args()
    os.environ.update(AWS_TEST_ENV)
    folder = Path(tempfile.mkdtemp(prefix="fakescan-chaos-"))
    redis, postgres, s3 = RedisServer(aof=True).start(), PostgresServer().start(), services.start_s3()
    proxy = FaultProxy(s3.url).start()
    stack = Stack(redis, postgres, s3, proxy, folder)
    try:
        bucket, corrupt = upload(s3.url, args.objects)
        detector = detector_folder(folder / "detectors", "chaos-bright", delay_seconds=args.delay)
        outcomes = []
        for pool in args.pools:
            outcomes.append(run(stack, f"{pool}, fault-free", bucket, corrupt, detector, pool, faults=None))
            outcomes.append(run(stack, f"{pool}, {FAULTS[args.faults]}", bucket, corrupt, detector, pool,
                                faults=args.faults))
    finally:
        proxy.stop()
        s3.stop()
        postgres.close()
        redis.close()
    report(args.objects, outcomes)


def upload(s3_url: str, count: int) -> tuple[str, set[str]]:
    import boto3

    bucket = f"chaos-{uuid.uuid4().hex[:8]}"
    client = boto3.client("s3", endpoint_url=s3_url)
    client.create_bucket(Bucket=bucket)
    corrupt = {f"in/{key.replace('/', '-')}": data for key, data in corrupt_objects().items()}
    objects = {f"in/{index:05d}.{'jpg' if index % 3 else 'png'}": image_bytes(index, "JPEG" if index % 3 else "PNG")
               for index in range(count - len(corrupt))}
    objects.update(corrupt)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda item: client.put_object(Bucket=bucket, Key=item[0], Body=item[1]), objects.items()))
    return bucket, set(corrupt)


def environment(stack: Stack, database: str, queue: str, s3_url: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("FAKESCAN_")}
    env.update(AWS_TEST_ENV, FAKESCAN_BROKER_URL=stack.redis.url, FAKESCAN_DATABASE_URL=database,
               FAKESCAN_S3_ENDPOINT_URL=s3_url, FAKESCAN_QUEUE=queue, FAKESCAN_HOME=str(stack.folder / queue),
               # 40 s > 5 s + two budgets of 15 s: a threads worker reads ahead (worker/celery_app.py)
               FAKESCAN_VISIBILITY_TIMEOUT="40", FAKESCAN_RETRY_BACKOFF_MAX="5", FAKESCAN_BATCH_BUDGET="15",
               FAKESCAN_BATCH_MAX_RETRIES="40", FAKESCAN_RECONCILE_GRACE="20", FAKESCAN_S3_TIMEOUT="3",
               FAKESCAN_SCAN_PROVENANCE="false", FAKESCAN_LOG_LEVEL="INFO", OMP_NUM_THREADS="1",
               PYTHONUNBUFFERED="1")
    return env


def run(stack: Stack, label: str, bucket: str, corrupt: set[str], detector: Path, pool: str, *,
        faults: str | None) -> Outcome:
    from fakescan.db import migrate
    from fakescan.settings import load_settings

    database = services.create_database(stack.postgres.url, f"chaos_{uuid.uuid4().hex[:8]}")
    migrate.upgrade(load_settings(database_url=database))
    queue = f"chaos-{re.sub('[^a-z]+', '-', label)}-{uuid.uuid4().hex[:6]}"
    worker_env = environment(stack, database, queue, stack.proxy.url)  # workers read S3 through the proxy
    scheduler_env = environment(stack, database, queue, stack.s3.url)
    workers = [WorkerProcess(name, worker_env, stack.folder, POOLS[pool]).start()
               for name in (f"{queue}-a", f"{queue}-b")]
    for worker in workers:  # both workers up (torch imported) before the clock starts
        wait_for(lambda worker=worker: "ready." in worker.text(), f"worker {worker.name} ready", 180)
    stack.proxy.injected.clear()
    outcome = Outcome(label)
    started = time.monotonic()
    scan = fakescan_background(scheduler_env, "scan", f"s3://{bucket}/in/", "--detector", str(detector),
                               "--batch-size", str(BATCH), "--wait")
    schedule = (threading.Thread(target=inject, args=(stack, workers, outcome, started, faults == "kill"),
                                 daemon=True) if faults else None)
    if schedule is not None:
        schedule.start()
    out, err = scan.communicate(timeout=1800)
    outcome.wall_seconds = time.monotonic() - started
    if schedule is not None:
        schedule.join(timeout=120)
    stack.proxy.set_plan(None)
    outcome.injected = Counter(stack.proxy.injected)
    for worker in workers:
        worker.kill()
    scan_id = int(out.splitlines()[0].split()[1])
    measure(outcome, database, scan_id, corrupt, workers, err)
    return outcome


def inject(stack: Stack, workers: list[WorkerProcess], outcome: Outcome, started: float, kill_only: bool) -> None:
    """The fault schedule, in seconds from the start of the scan."""
    def at(second: float, what: str, action: Callable[[], Any]) -> None:
        time.sleep(max(0.0, started + second - time.monotonic()))
        action()
        outcome.events.append(f"{time.monotonic() - started:5.1f}s {what}")

    if kill_only:
        at(10, f"SIGKILL worker {workers[0].name}", workers[0].kill)
        at(14, f"worker {workers[0].name} started again", workers[0].start)
        return
    at(3, f"S3 faults on: {S3_FAULTS}", lambda: stack.proxy.set_plan(FaultPlan(dict(S3_FAULTS), seed=7)))
    at(10, f"SIGKILL worker {workers[0].name}", workers[0].kill)
    at(14, f"worker {workers[0].name} started again", workers[0].start)
    at(25, "Redis killed (SIGKILL)", stack.redis.kill)
    at(28, "Redis started again (its AOF)", stack.redis.start)
    at(40, "PostgreSQL stopped", stack.postgres.stop)
    at(70, "PostgreSQL started again", stack.postgres.start)
    at(80, "S3 faults off", lambda: stack.proxy.set_plan(None))


def measure(outcome: Outcome, database: str, scan_id: int, corrupt: set[str], workers: list[WorkerProcess],
            scheduler_log: str) -> None:
    from sqlalchemy import create_engine, func, select

    from fakescan.db.models import Result, Scan, ScanItem, StoredObject

    engine = create_engine(database)
    with engine.connect() as connection:
        outcome.state = connection.execute(select(Scan.state).where(Scan.id == scan_id)).scalar_one()
        keys = dict(connection.execute(select(StoredObject.id, StoredObject.key)
                                       .join(ScanItem, ScanItem.object_id == StoredObject.id)
                                       .where(ScanItem.scan_id == scan_id)).all())
        rows = connection.execute(select(Result.object_id, Result.detector, Result.status, Result.error)
                                  .where(Result.object_id.in_(list(keys)))).all()
        outcome.batches = connection.execute(select(func.count(func.distinct(ScanItem.batch)))
                                             .where(ScanItem.scan_id == scan_id)).scalar_one()
    engine.dispose()
    per_object = Counter((object_id, detector) for object_id, detector, _, _ in rows)
    outcome.lost = len(keys) - len({object_id for object_id, _ in per_object})
    outcome.duplicate_rows = sum(count - 1 for count in per_object.values())
    for object_id, _, status, _error in rows:
        if status != "ok" and keys[object_id] in corrupt:
            outcome.bad_input_rows += 1
        elif status != "ok":
            outcome.fault_error_rows += 1
    outcome.expected_bad_input = len(corrupt)
    starts: Counter[int] = Counter()
    for worker in workers:
        starts.update(worker.starts(scan_id))
        outcome.redelivered += worker.redeliveries(scan_id)
        outcome.fetched_ahead += sum(int(count) for scan, count in FETCHED_AHEAD.findall(worker.text())
                                     if int(scan) == scan_id)
        outcome.retried += len({(b, a) for s, b, a in RETRIED.findall(worker.text()) if int(s) == scan_id})
    outcome.batches_started_twice = sum(1 for count in starts.values() if count > 1)
    outcome.requeued = sum(1 for s, _ in REQUEUED.findall(scheduler_log) if int(s) == scan_id)


def report(objects: int, outcomes: list[Outcome]) -> None:
    import platform

    print(f"bench_chaos: {objects} objects ({BATCH} per batch), two workers of one process or thread each, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}, load {os.getloadavg()[0]:.1f}")
    for number, outcome in enumerate(outcomes):
        baseline = outcomes[number - number % 2].wall_seconds  # each pool's fault-free run
        print(f"\n== {outcome.label}")
        for event in outcome.events:
            print(f"  {event}")
        print(f"  final scan state         {outcome.state}")
        print(f"  objects lost             {outcome.lost}")
        print(f"  duplicate result rows    {outcome.duplicate_rows}")
        print(f"  error rows from faults   {outcome.fault_error_rows}")
        print(f"  bad-input error rows     {outcome.bad_input_rows} "
              f"(of {outcome.expected_bad_input} corrupt objects)")
        print(f"  batches started > once   {outcome.batches_started_twice} of {outcome.batches} "
              f"(retry attempts after a fault {outcome.retried}, redeliveries {outcome.redelivered}, "
              f"reconciler re-enqueues {outcome.requeued})")
        print(f"  S3 faults injected       {dict(outcome.injected) or 'none'}")
        print(f"  objects fetched ahead    {outcome.fetched_ahead}")
        ratio = outcome.wall_seconds / baseline
        print(f"  wall time                {outcome.wall_seconds:.1f}s ({ratio:.2f}x fault-free)")


if __name__ == "__main__":
    main()
