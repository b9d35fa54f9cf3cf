"""Query-side commands: ``results``, ``detectors``, ``db``. None of them imports torch."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from typing import Any, Iterable, TextIO

from fakescan.db.models import RESULT_STATUSES, VERDICTS
from fakescan.errors import UsageError
from fakescan.settings import Settings

RESULT_FORMATS = ("table", "csv", "jsonl")


def register(subparsers: argparse._SubParsersAction) -> None:
    results = subparsers.add_parser("results", help="stream stored verdicts, filtered")
    results.add_argument("--scan", type=int, metavar="ID", help="results for the objects this scan enqueued")
    results.add_argument("--verdict", choices=VERDICTS, help="only rows with this detector verdict")
    results.add_argument("--min-score", type=float, metavar="X", help="score >= X (P(AI-generated), 0..1)")
    results.add_argument("--prefix", metavar="P", help="s3://bucket/prefix, file:///folder, /folder or a key prefix")
    results.add_argument("--detector", metavar="NAME", help="only this detector's rows (its name, any version)")
    results.add_argument("--status", choices=RESULT_STATUSES, help="ok rows or error rows only")
    results.add_argument("--format", choices=RESULT_FORMATS,
                         help="default: table on a terminal, jsonl when piped")
    results.add_argument("--limit", type=int, metavar="N", help="at most N rows, first-listed objects first")
    results.set_defaults(handler=list_results)

    detectors = subparsers.add_parser("detectors", help="list detector families and named detectors")
    detectors_sub = detectors.add_subparsers(dest="detectors_command", metavar="COMMAND", required=True)
    listing = detectors_sub.add_parser("list", help="families and named detectors with versions")
    listing.set_defaults(handler=list_detectors)

    database = subparsers.add_parser("db", help="results database schema")
    database_sub = database.add_subparsers(dest="db_command", metavar="COMMAND", required=True)
    upgrade = database_sub.add_parser("upgrade", help="migrate the schema to this fakescan's head")
    upgrade.add_argument("revision", nargs="?", default="head", help="Alembic revision to reach (default: head)")
    upgrade.set_defaults(handler=db_upgrade)
    current = database_sub.add_parser("current", help="print the schema revision")
    current.set_defaults(handler=db_current)


def list_detectors(args: argparse.Namespace, settings: Settings) -> int:
    from fakescan import catalog

    out = sys.stdout
    out.write("FAMILIES\n")
    for info in sorted(catalog.families().values(), key=lambda i: i.name):
        out.write(f"  {info.name:<24} {info.summary}\n")
    out.write("DETECTORS\n")
    for name, ref in sorted(catalog.named_detectors(settings).items()):
        out.write(f"  {name:<24} family={ref.family} version={ref.version}\n")
    return 0


def db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from fakescan.db import migrate

    migrate.upgrade(settings, args.revision)
    print(f"database at {migrate.head_revision(settings) if args.revision == 'head' else args.revision}")
    return 0


def db_current(args: argparse.Namespace, settings: Settings) -> int:
    from fakescan.db import migrate
    from fakescan.db.database import open_database

    with open_database(settings, check_schema=False) as database:
        print(migrate.current_revision(database.engine) or "empty")
    return 0


def list_results(args: argparse.Namespace, settings: Settings) -> int:
    from fakescan.db.database import open_database
    from fakescan.db.queries import ResultQuery, detector_labels, iter_results

    if args.min_score is not None and not 0.0 <= args.min_score <= 1.0:
        raise UsageError(f"--min-score is a probability in [0, 1], got {args.min_score}")
    if args.limit is not None and args.limit < 0:
        raise UsageError(f"--limit cannot be negative, got {args.limit}")
    query = ResultQuery(scan_id=args.scan, verdict=args.verdict, min_score=args.min_score, prefix=args.prefix,
                        detector=args.detector, status=args.status, limit=args.limit)
    out_format = args.format or ("table" if sys.stdout.isatty() else "jsonl")
    try:
        with open_database(settings) as database, database.sessions() as session:
            rows = iter_results(session, query)
            if out_format == "table":
                _write_table(rows, sys.stdout, detector_labels(session, args.scan))
            else:
                _WRITERS[out_format](rows, sys.stdout)
            sys.stdout.flush()
    except BrokenPipeError:  # `fakescan results | head`: the reader has what it wanted
        _silence_stdout()
    return 0


def _write_jsonl(rows: Iterable[dict[str, Any]], out: TextIO) -> None:
    for row in rows:
        out.write(json.dumps(_plain(row)) + "\n")


def _write_csv(rows: Iterable[dict[str, Any]], out: TextIO) -> None:
    from fakescan.db.queries import RESULT_FIELDS

    writer = csv.DictWriter(out, fieldnames=RESULT_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        plain = _plain(row)
        plain["parts"] = json.dumps(plain["parts"]) if plain["parts"] is not None else None
        writer.writerow(plain)


_TABLE_ROW = "{verdict:<9} {score:>6} {status:<6} {detector:<{width}} {scanned_at:<20} {uri}"


def _write_table(rows: Iterable[dict[str, Any]], out: TextIO, detectors: Iterable[str] = ()) -> None:
    """Fixed columns, URI last (never truncated), so rows print as they stream in; the detector
    column is as wide as the longest ``name@version`` among ``detectors``."""
    width = max((len(label) for label in detectors), default=0)
    width = max(width, len("DETECTOR"))
    out.write(_TABLE_ROW.format(verdict="VERDICT", score="SCORE", status="STATUS", detector="DETECTOR",
                                scanned_at="SCANNED", uri="URI", width=width) + "\n")
    for row in rows:
        line = _TABLE_ROW.format(
            width=width,
            verdict=row["verdict"] or "-",
            score=f"{row['score']:.3f}" if row["score"] is not None else "-",
            status=row["status"],
            detector=f"{row['detector']}@{row['detector_version']}",
            scanned_at=row["scanned_at"].strftime("%Y-%m-%dT%H:%M:%SZ") if row["scanned_at"] else "-",
            uri=row["uri"],
        )
        out.write(line + (f"  error: {row['error']}" if row["error"] else "") + "\n")


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    plain = dict(row)
    plain["scanned_at"] = row["scanned_at"].isoformat() if row["scanned_at"] else None
    return plain


def _silence_stdout() -> None:
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


_WRITERS = {"csv": _write_csv, "jsonl": _write_jsonl}  # table: _write_table, which needs the detectors
