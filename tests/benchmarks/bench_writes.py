"""Benchmark: result rows upserted per second into PostgreSQL, the way a worker writes a batch.

Run: ``nice -n 10 .venv/bin/python -m tests.benchmarks.bench_writes --baseline main [--objects 256] [--repeat 20]
[--rounds 3]`` (starts its own PostgreSQL, like the tests, but durable as in production: fsync, synchronous_commit
and full_page_writes on, which the test server runs without; ``--fast-server`` runs it as the
tests do). Prints, for one run:

- a batch of ``--objects`` objects x 3 detectors (768 rows at the default) written as a worker
  writes it: ``fakescan.db.results.write_batch`` in one transaction, ``--repeat`` batches of new
  rows (inserts, a first scan), then one batch ``--repeat`` times again (updates: a redelivered
  batch), then the same with the combined verdicts the worker records in the same transaction,
  then every batch of new rows once more under a second scan (a re-scan: each row rewritten once,
  its ``scan_id`` changes); rows/s each (mean over the batches), the statements per batch, and the WAL
  written per row (``pg_current_wal_lsn()`` before and after: what a durable commit flushes);
- with ``--baseline REV``: the same with the code of git revision ``REV`` (exported with ``git
  archive``), in alternating child processes (``--rounds`` each, medians), each on a fresh
  database of the same server, and the ratio this code / ``REV``.

Not a test: pytest does not collect it.
"""

from __future__ import annotations

import argparse
import inspect
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

DETECTORS = (("provenance", "provenance", "1.0.0"), ("default", "compact-cnn", "1"),
             ("siglip2-ft", "siglip2", "siglip2-abc"))
FIGURES = (("first", "new rows (inserts)"), ("updates", "re-written (upsert updates)"),
           ("verdicts", "re-written + combined verdicts"), ("rescan", "re-scanned (new scan, rows once)"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="child runs per code version (medians)")
    parser.add_argument("--baseline", metavar="REV", help="also measure the code of this git revision")
    parser.add_argument("--fast-server", action="store_true",
                        help="run the server as the tests do: no fsync, no synchronous commit, no full-page writes")
    parser.add_argument("--child", metavar="DATABASE_URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # the code under test first on the path: import nothing of this tree's tests here
        print(json.dumps(measure(args.child, args.objects, args.repeat)))
        return
    from tests import services
    from tests.benchmarks.alternating import run_alternating, trees

    postgres = services.start_postgres(durable=not args.fast_server)
    try:
        print(server_settings(postgres.url))
        with tempfile.TemporaryDirectory(prefix="fakescan-bench-writes-") as scratch:
            runs = run_alternating(__file__, trees(args.baseline, Path(scratch)), args.rounds, lambda: [
                "--child", services.create_database(postgres.url, f"bench_{uuid.uuid4().hex[:8]}"),
                "--objects", str(args.objects), "--repeat", str(args.repeat)])
    finally:
        postgres.stop()
    report(args, runs)


def server_settings(admin_url: str) -> str:
    import sqlalchemy

    engine = sqlalchemy.create_engine(admin_url)
    with engine.connect() as connection:
        shown = {name: connection.scalar(sqlalchemy.text(f"SHOW {name}"))
                 for name in ("fsync", "synchronous_commit", "full_page_writes")}
    engine.dispose()
    return "PostgreSQL " + ", ".join(f"{name}={value}" for name, value in shown.items())


def report(args: argparse.Namespace, runs: dict[str, list[dict[str, Any]]]) -> None:
    from tests.benchmarks.alternating import THIS_CODE, load_range, medians

    rows = args.objects * len(DETECTORS)
    print(f"batches of {args.objects} objects x {len(DETECTORS)} detectors = {rows} rows; "
          f"medians of {args.rounds} child runs per code version, alternating")
    print(load_range(runs))
    found = medians(runs)
    baseline = found.get(args.baseline) if args.baseline else None
    for key, label in FIGURES:
        line = f"  {label:32} {found[THIS_CODE][key]:9.0f} rows/s"
        if baseline:
            line += f"   {args.baseline}: {baseline[key]:9.0f} rows/s   = {found[THIS_CODE][key] / baseline[key]:.2f}x"
        print(line)
    for key, label, unit in (("statements", "statements per batch (rows only)", ""),
                             ("wal_first", "WAL per new row", " bytes"),
                             ("wal_updates", "WAL per re-written row", " bytes")):
        if key not in found[THIS_CODE]:
            continue
        line = f"  {label:32} {found[THIS_CODE][key]:9.0f}{unit}"
        if baseline:
            line += f"   {args.baseline}: {baseline[key]:9.0f}{unit}"
        print(line)


def measure(url: str, objects: int, repeat: int) -> dict[str, float]:
    """Runs in a child process, with the code under test first on the path."""
    from sqlalchemy import event, text

    from fakescan.db import migrate, scans
    from fakescan.db.engine import make_engine, make_sessionmaker
    from fakescan.db.models import StoredObject, utcnow
    from fakescan.db.results import write_batch
    from fakescan.db.verdicts import record_batch_verdicts
    from fakescan.settings import load_settings

    with tempfile.TemporaryDirectory(prefix="fakescan-bench-home-") as home:
        settings = load_settings(database_url=url, home=home)
        migrate.upgrade(settings)
        engine = make_engine(settings)
        sessions = make_sessionmaker(engine)
        entries = [{"name": name, "family": family, "version": version, "location": ""}
                   for name, family, version in DETECTORS]
        with sessions.begin() as session:
            stored = [StoredObject(uri=f"file:///bench/{i}.jpg", store="file:///bench", key=f"{i}.jpg",
                                   fingerprint=f"sha256:{i:064x}") for i in range(objects * (repeat + 1))]
            session.add_all(stored)
            session.flush()
            every_id = [row.id for row in stored]
            scan_id = scans.create_scan(session, "file:///bench", entries, {})
            batches = [every_id[start:start + objects] for start in range(0, len(every_id), objects)]
            scans.add_batches(session, scan_id, 1, batches)

        def results(seed: int, ids: list[int]) -> list[dict[str, Any]]:
            return [{"object_id": object_id, "detector": name, "detector_version": version,
                     "fingerprint": f"sha256:{object_id:064x}", "status": "ok",
                     "score": (object_id * 7 + seed) % 100 / 100, "verdict": "real",
                     "parts": {"member": 0.25} if family == "siglip2" else None,
                     "evidence": {"finding": "none", "signals": []} if family == "provenance" else None,
                     "error": None, "timings": {"fetch_ms": 1.5, "decode_ms": 12.25, "inference_ms": 3.125},
                     "scanned_at": utcnow()}
                    for object_id in ids for name, family, version in DETECTORS]

        gives_rows = "rows" in inspect.signature(record_batch_verdicts).parameters
        statements = [0]
        event.listen(engine, "before_cursor_execute", lambda *_: statements.__setitem__(0, statements[0] + 1))

        def timed(seed: int, verdicts: bool, ids: list[int] = batches[0], scan: int = scan_id) -> float:
            batch = results(seed, ids)
            started = time.perf_counter()
            with sessions.begin() as session:
                written = write_batch(session, scan, batch)
                if verdicts:  # as the worker calls it (older code takes no rows: it reads them back)
                    record_batch_verdicts(session, scan, written, settings, *([batch] if gives_rows else []))
            return time.perf_counter() - started

        def wal_position() -> int:
            with engine.connect() as connection:
                return int(connection.scalar(text("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")))

        count = objects * len(DETECTORS)
        wal = [wal_position()]
        inserts = sum(timed(0, verdicts=False, ids=ids) for ids in batches[1:])
        wal.append(wal_position())
        statements[0] = 0
        updates = sum(timed(seed, verdicts=False) for seed in range(1, repeat + 1))
        per_batch = statements[0] / repeat
        wal.append(wal_position())
        with_verdicts = sum(timed(seed, verdicts=True) for seed in range(1, repeat + 1))
        with sessions.begin() as session:
            rescan_id = scans.create_scan(session, "file:///bench", entries, {})
            scans.add_batches(session, rescan_id, 1, batches[1:])
        rescans = sum(timed(repeat + 1, verdicts=False, ids=ids, scan=rescan_id) for ids in batches[1:])
        engine.dispose()
    return {"first": count * repeat / inserts, "updates": count * repeat / updates,
            "verdicts": count * repeat / with_verdicts, "rescan": count * repeat / rescans, "statements": per_batch,
            "wal_first": (wal[1] - wal[0]) / (count * repeat), "wal_updates": (wal[2] - wal[1]) / (count * repeat)}


if __name__ == "__main__":
    main()
