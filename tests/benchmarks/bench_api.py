"""Benchmark: latency of the API's object pages over 1,000,000 result rows in PostgreSQL.

Run: ``nice -n 10 .venv/bin/python -m tests.benchmarks.bench_api [--objects 1000000] [--repeat 200]``
(starts its own PostgreSQL, like the tests). It generates one finished scan of ``--objects``
objects, each with one detector result, a combined verdict and a scan item (server-side
``INSERT ... SELECT generate_series``: one statement per table), runs ``VACUUM ANALYZE``, then times
whole HTTP requests through the application (FastAPI in-process, no network) and prints p50/p95 of
the wall-clock time and of this process's CPU time (which other work on the cores does not inflate):

- the gallery's first page (scan, verdict=fake, sorted by score, 50 rows) and other filters;
- page N of the same listing reached through the cursor (N = 10, 1000, 5000 when it exists);
- the baseline measured in the same run: the same page N read with ``OFFSET`` in plain SQL,
  and the ratio keyset / OFFSET.
Not a test: pytest does not collect it.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import text

from tests import services

PAGE = 50
WARM_UP = 20
GALLERY = {"scan": 1, "verdict": "fake", "sort": "-score", "limit": PAGE}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    postgres = services.start_postgres()
    try:
        run(args.objects, args.repeat, postgres.url)
    finally:
        postgres.stop()


def generate(engine: Any, count: int, policy_version: str) -> float:
    """One scan of ``count`` objects, each with a result, a verdict and a scan item; returns seconds."""
    score = "((g::bigint * 2654435761) % 1000003)::float8 / 1000003"
    verdict = f"CASE WHEN g % 200 = 0 THEN NULL WHEN {score} >= 0.65 THEN 'fake' WHEN {score} < 0.35 THEN 'real' " \
              "ELSE 'uncertain' END"
    statements = [
        ("INSERT INTO scans (id, source, detectors, options, state, listed, enqueued, skipped, created_at, "
         "started_at, listing_finished_at, finished_at) VALUES (1, 's3://bench/', "
         "'[{\"name\": \"default\", \"version\": \"d1\", \"family\": \"compact-cnn\", \"location\": \"\"}]', '{}', "
         f"'finished', {count}, {count}, 0, now(), now(), now(), now())"),
        ("INSERT INTO objects (id, uri, store, key, etag, size, fingerprint, first_seen, updated_at) "
         "SELECT g, 's3://bench/' || k, 's3://bench', k, 'e' || g, 40000, 'etag:e' || g || '\\:40000', now(), now() "
         f"FROM (SELECT g, CASE WHEN g % 2 = 0 THEN 'a/' ELSE 'b/' END || lpad(g::text, 8, '0') || '.jpg' AS k "
         f"FROM generate_series(1, {count}) g) s"),
        (f"INSERT INTO scan_items (scan_id, object_id, batch, state, updated_at) SELECT 1, g, g / 32, 'done', now() "
         f"FROM generate_series(1, {count}) g"),
        ("INSERT INTO results (object_id, detector, detector_version, scan_id, fingerprint, status, score, verdict, "
         "error, scanned_at) SELECT g, 'default', 'd1', 1, 'etag:e' || g || '\\:40000', "
         "CASE WHEN g % 200 = 0 THEN 'error' ELSE 'ok' END, "
         f"CASE WHEN g % 200 = 0 THEN NULL ELSE {score} END, {verdict}, "
         "CASE WHEN g % 200 = 0 THEN 'corrupt: truncated JPEG data' END, "
         f"now() - (g || ' milliseconds')::interval FROM generate_series(1, {count}) g"),
        ("INSERT INTO verdicts (object_id, policy_version, verdict, score, explanation, decided_at) "
         f"SELECT g, '{policy_version}', {verdict}, CASE WHEN g % 200 = 0 THEN NULL ELSE {score} END, "
         "'{\"rule\": \"weighted\"}', now() - (g || ' milliseconds')::interval "
         f"FROM generate_series(1, {count}) g"),
        "SELECT setval(pg_get_serial_sequence('objects', 'id'), (SELECT max(id) FROM objects))",
    ]
    started = time.perf_counter()
    with engine.begin() as connection:
        for statement in statements:
            connection.execute(text(statement))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE"))  # what autovacuum leaves: hint bits, visibility map, statistics
    return time.perf_counter() - started


def percentiles(timings: list[float]) -> tuple[float, float]:
    ordered = sorted(timings)
    return statistics.median(ordered) * 1000, ordered[max(0, int(len(ordered) * 0.95) - 1)] * 1000


def timed(call: Callable[[], Any], repeat: int, cpu: list[float] | None = None) -> tuple[float, float]:
    """Wall-clock p50/p95 in ms; ``cpu`` receives this process's CPU p50/p95 (all its threads), which
    waiting for a core that other work holds does not inflate."""
    for _ in range(WARM_UP):
        call()
    timings, cpu_times = [], []
    for _ in range(repeat):
        started, cpu_started = time.perf_counter(), time.process_time()
        call()
        timings.append(time.perf_counter() - started)
        cpu_times.append(time.process_time() - cpu_started)
    if cpu is not None:
        cpu[:] = percentiles(cpu_times)
    return percentiles(timings)


def row(name: str, wall: tuple[float, float], cpu: list[float], extra: str = "") -> str:
    cpu_text = f"{cpu[0]:>8.1f} {cpu[1]:>8.1f}" if cpu else f"{'':>8} {'':>8}"
    return f"{name:<50} {wall[0]:>8.1f} {wall[1]:>8.1f} {cpu_text}{extra}"


def cursors_to(client: Any, params: dict[str, Any], pages: set[int]) -> dict[int, str]:
    """Walk the listing through the cursor; the cursor that opens each page in ``pages``."""
    found, cursor, page = {}, None, 1
    while page <= max(pages):
        body = client.get("/api/v1/objects", params={**params, **({"cursor": cursor} if cursor else {})}).json()
        cursor = body["next_cursor"]
        if cursor is None:
            break
        page += 1
        if page in pages:
            found[page] = cursor
    return found


def run(count: int, repeat: int, admin_url: str) -> None:
    from fastapi.testclient import TestClient

    from fakescan.api.app import create_app
    from fakescan.db import migrate
    from fakescan.db.engine import make_engine
    from fakescan.settings import load_settings
    from fakescan.verdicts import load_policy

    url = services.create_database(admin_url, f"bench_{uuid.uuid4().hex[:8]}")
    for name in [name for name in os.environ if name.startswith("FAKESCAN_")]:
        del os.environ[name]
    settings = load_settings(database_url=url, home="/tmp/fakescan-bench-api-home")
    migrate.upgrade(settings)
    engine = make_engine(settings)
    seconds = generate(engine, count, load_policy(None).version)
    with engine.connect() as connection:
        results = connection.execute(text("SELECT count(*) FROM results")).scalar_one()
        flagged = connection.execute(text("SELECT count(*) FROM verdicts WHERE verdict = 'fake'")).scalar_one()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"PostgreSQL {engine.dialect.server_version_info}")
    print(f"generated {results:,} result rows ({count:,} objects, verdicts and scan items; {flagged:,} flagged) "
          f"in {seconds:.1f} s")
    app = create_app(settings)
    client = TestClient(app)
    print(f"{'request (ms)':<50} {'p50':>8} {'p95':>8} {'CPU p50':>8} {'CPU p95':>8}")
    cases = {
        "gallery page 1: scan, verdict=fake, -score": GALLERY,
        "page 1: all objects, -score": {"sort": "-score", "limit": PAGE},
        "page 1: scan, verdict=fake, -time": {**GALLERY, "sort": "-time"},
        "page 1: scan, verdict=fake, prefix a/": {**GALLERY, "prefix": "a/"},
        "page 1: detector=default, min_score=0.9": {"detector": "default", "min_score": 0.9, "limit": PAGE},
        "page 1: verdict=fake, review=unreviewed": {**GALLERY, "review": "unreviewed"},
    }
    for name, params in cases.items():
        cpu: list[float] = []
        wall = timed(lambda params=params: _ok(client.get("/api/v1/objects", params=params)), repeat, cpu)
        print(row(name, wall, cpu), flush=True)
    wanted = {10, 1000, 5000}
    cursors = cursors_to(client, GALLERY, wanted)
    policy_version = load_policy(None).version
    with engine.connect() as connection:
        for page, cursor in sorted(cursors.items()):
            cpu: list[float] = []
            wall = timed(lambda cursor=cursor: _ok(client.get("/api/v1/objects",
                                                              params={**GALLERY, "cursor": cursor})), repeat, cpu)
            print(row(f"gallery page {page} via the cursor", wall, cpu), flush=True)
            keyset = _keyset_query(engine, policy_version, cursor)
            sql = timed(lambda keyset=keyset: connection.execute(keyset).all(), max(20, repeat // 4))
            print(row("  its SQL alone (keyset)", sql, []))
            offset = _offset_query(policy_version, (page - 1) * PAGE)
            baseline = timed(lambda offset=offset: connection.execute(offset).all(), max(20, repeat // 4))
            print(row("  baseline: same page by OFFSET (SQL alone)", baseline, [],
                      f"   OFFSET/keyset p50 {baseline[0] / sql[0]:.0f}x"), flush=True)
    app.state.engine.dispose()
    engine.dispose()


def _keyset_query(engine: Any, policy_version: str, cursor: str) -> Any:
    """The SQL the API runs for the page this cursor opens, with the values inlined."""
    from sqlalchemy import literal, tuple_

    from fakescan.api.queries import decode_cursor
    from fakescan.db import listing
    from fakescan.db.engine import make_sessionmaker
    from fakescan.db.models import Verdict

    position = decode_cursor(cursor, "-score")
    with make_sessionmaker(engine)() as session:
        base = listing.filtered_statement(session, listing.ObjectFilter(policy_version, scan_id=1, verdict="fake"))
    key = tuple_(Verdict.score, Verdict.object_id) < tuple_(literal(position.value), literal(position.object_id))
    statement = base.where(Verdict.score.is_not(None), key).order_by(Verdict.score.desc(), Verdict.object_id.desc())
    return text(str(statement.limit(PAGE + 1).compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})))


def _offset_query(policy_version: str, offset: int) -> Any:
    return text(
        "SELECT v.object_id, o.uri, v.verdict, v.score FROM verdicts v JOIN objects o ON o.id = v.object_id "
        "JOIN scan_items i ON i.object_id = v.object_id AND i.scan_id = 1 "
        f"WHERE v.policy_version = '{policy_version}' AND v.verdict = 'fake' AND v.score IS NOT NULL "
        f"ORDER BY v.score DESC, v.object_id DESC LIMIT {PAGE} OFFSET {offset}")


def _ok(response: Any) -> Any:
    if response.status_code != 200:
        raise RuntimeError(f"{response.status_code}: {response.text[:200]}")
    return response


if __name__ == "__main__":
    main()
