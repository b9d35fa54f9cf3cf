"""Benchmark: result rows upserted per second into PostgreSQL, and objects scheduled per second.

Run: ``nice -n 10 .venv/bin/python -m tests.benchmarks.bench_writes [--objects 256] [--repeat 20] [--files 5000]``
(starts its own PostgreSQL, like the tests). Prints, for one run on this machine:

- **writer**: a batch of ``--objects`` objects x 3 detectors (768 rows at the default) written the
  way a worker writes it: ``fakescan.db.results.write_batch`` in one transaction (the upsert is one
  multi-row statement), first as inserts, then ``--repeat`` times as updates (a redelivered batch),
  and the same with the combined verdicts the worker records in the same transaction;
- **scheduler**: ``fakescan scan`` over a local folder of ``--files`` small files (listing with a
  sha256 per file, upsert of objects, scan items, dispatch to a no-op), as objects/s, beside the
  bare listing rate of the same folder (the baseline).

Not a test: pytest does not collect it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from tests import services

DETECTORS = (("provenance", "provenance", "1.0.0"), ("default", "compact-cnn", "1"),
             ("siglip2-ft", "siglip2", "siglip2-abc"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--files", type=int, default=5000)
    args = parser.parse_args()
    postgres = services.start_postgres()
    try:
        with tempfile.TemporaryDirectory(prefix="fakescan-bench-writes-") as scratch:
            run(args, postgres.url, Path(scratch))
    finally:
        postgres.stop()


def run(args: argparse.Namespace, admin_url: str, scratch: Path) -> None:
    from fakescan.db import migrate
    from fakescan.db.engine import make_engine, make_sessionmaker
    from fakescan.settings import load_settings

    url = services.create_database(admin_url, f"bench_{uuid.uuid4().hex[:8]}")
    settings = load_settings(database_url=url, home=scratch / "home")
    migrate.upgrade(settings)
    engine = make_engine(settings)
    sessions = make_sessionmaker(engine)
    try:
        writer_rates(sessions, settings, args.objects, args.repeat)
        scheduler_rates(sessions, settings, scratch / "files", args.files)
    finally:
        engine.dispose()


def writer_rates(sessions: Any, settings: Any, objects: int, repeat: int) -> None:
    from fakescan.db import scans
    from fakescan.db.models import StoredObject, utcnow
    from fakescan.db.results import write_batch
    from fakescan.db.verdicts import record_batch_verdicts

    entries = [{"name": name, "family": family, "version": version, "location": ""}
               for name, family, version in DETECTORS]
    with sessions.begin() as session:
        rows = [StoredObject(uri=f"file:///bench/{i}.jpg", store="file:///bench", key=f"{i}.jpg",
                             fingerprint=f"sha256:{i:064x}") for i in range(objects)]
        session.add_all(rows)
        session.flush()
        ids = [row.id for row in rows]
        scan_id = scans.create_scan(session, "file:///bench", entries, {})
        scans.add_items(session, scan_id, 1, ids)

    def results(seed: int) -> list[dict[str, Any]]:
        return [{"object_id": object_id, "detector": name, "detector_version": version,
                 "fingerprint": f"sha256:{object_id:064x}", "status": "ok", "score": (object_id * 7 + seed) % 100 / 100,
                 "verdict": "real", "parts": {"member": 0.25} if family == "siglip2" else None,
                 "evidence": {"finding": "none", "signals": []} if family == "provenance" else None, "error": None,
                 "timings": {"fetch_ms": 1.5, "decode_ms": 12.25, "inference_ms": 3.125}, "scanned_at": utcnow()}
                for object_id in ids for name, family, version in DETECTORS]

    def timed(seed: int, verdicts: bool) -> float:
        batch = results(seed)
        started = time.perf_counter()
        with sessions.begin() as session:
            written = write_batch(session, scan_id, batch)
            if verdicts:
                record_batch_verdicts(session, scan_id, written, settings)
        return time.perf_counter() - started

    count = objects * len(DETECTORS)
    first = timed(0, verdicts=False)
    updates = sum(timed(seed, verdicts=False) for seed in range(1, repeat + 1))
    with_verdicts = sum(timed(seed, verdicts=True) for seed in range(1, repeat + 1))
    print(f"writer: batches of {objects} objects x {len(DETECTORS)} detectors = {count} rows, PostgreSQL")
    print(f"  first write (inserts)          {count / first:9.0f} rows/s")
    print(f"  re-written (upsert updates)    {count * repeat / updates:9.0f} rows/s  (mean of {repeat} batches)")
    print(f"  re-written + combined verdicts {count * repeat / with_verdicts:9.0f} rows/s  "
          f"({with_verdicts / updates:.2f}x the time of the rows alone)")


def scheduler_rates(sessions: Any, settings: Any, folder: Path, files: int) -> None:
    from fakescan.catalog import DetectorRef
    from fakescan.storage import ListFilter, open_store
    from scheduler.scan import ScanRequest, create_scan, run_scan

    for index in range(files):
        path = folder / f"{index % 50:02d}" / f"{index:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(index.to_bytes(4, "big") * 64)
    every = ListFilter(extensions=())
    store = open_store(str(folder), settings)
    started = time.perf_counter()
    listed = sum(1 for _ in store.list(every))
    listing = time.perf_counter() - started
    request = ScanRequest(store.root, [DetectorRef("bench", "compact-cnn", "1", None)], every, batch_size=64)
    scan_id = create_scan(sessions, request, "bench")
    started = time.perf_counter()
    run_scan(sessions, scan_id, store, request, lambda *_: None)
    scheduled = time.perf_counter() - started
    print(f"scheduler: local folder of {listed} files, PostgreSQL")
    print(f"  bare listing (sha256 per file) {listed / listing:9.0f} objects/s  (baseline)")
    print(f"  first scan, enqueued           {listed / scheduled:9.0f} objects/s  "
          f"{listing / scheduled:.2f}x the listing rate")


if __name__ == "__main__":
    main()
