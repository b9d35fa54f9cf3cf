"""``fakescan nightly SOURCE``: an incremental scan of what changed since the last successful run.

The cut-off is the start of the latest *successful* scan of the same source with the same
detectors and listing filters: state ``finished`` and no batch given up on (item state
``given-up``). Bad input (items in state ``error``, whose objects got an error row) does not hold
the cut-off back: those objects have their answer, and only new content changes it. Objects modified
after that moment (less ``--overlap``, for clock skew between the scheduler and the store) are
listed again; the scheduler's skip rule drops the ones already scanned with the same content.
With no such scan yet, the run is a full scan. Never imports torch.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Sequence

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from fakescan.db.models import Scan, ScanItem
from fakescan.db.scans import as_utc
from fakescan.errors import UsageError
from fakescan.settings import Settings

# how many recent finished scans of a source to compare before giving up on finding a match
CANDIDATES = 50


@dataclass(frozen=True)
class LastSuccess:
    scan_id: int
    started_at: datetime


def last_success(session: Session, source: str, detectors: list[dict[str, str]],
                 filters: dict[str, Any]) -> LastSuccess | None:
    """The latest finished scan of ``source`` with these detectors and filters and no given-up batch."""
    failed_item = exists().where(ScanItem.scan_id == Scan.id, ScanItem.state == "given-up")
    candidates = session.execute(
        select(Scan.id, Scan.started_at, Scan.created_at, Scan.detectors, Scan.options)
        .where(Scan.source == source, Scan.state == "finished", ~failed_item)
        .order_by(Scan.id.desc())
        .limit(CANDIDATES)
    )
    wanted_detectors = _detector_keys(detectors)
    for scan_id, started_at, created_at, scan_detectors, options in candidates:
        if _detector_keys(scan_detectors) != wanted_detectors:
            continue
        if _listing_filters((options or {}).get("filters") or {}) != _listing_filters(filters):
            continue
        return LastSuccess(scan_id, as_utc(started_at or created_at))
    return None


def _detector_keys(detectors: Sequence[dict[str, str]]) -> set[tuple[str, str]]:
    return {(detector["name"], detector["version"]) for detector in detectors}


def _listing_filters(filters: dict[str, Any]) -> dict[str, Any]:
    """What decides which keys a listing admits, apart from the time cut-off itself."""
    return {name: value for name, value in filters.items() if name != "since"}


def nightly_command(args: argparse.Namespace, settings: Settings) -> int:
    """Notes go to stderr, so stdout stays exactly what ``fakescan scan`` prints (``scan <id>`` first)."""
    overlap = parse_overlap(args.overlap)
    cutoff = find_cutoff(args, settings)
    argv = scan_argv(args, cutoff.started_at - overlap if cutoff else None)
    if cutoff is None:
        note = f"no earlier successful scan of {args.source} with these detectors and filters: full scan"
    else:
        note = f"last successful scan {cutoff.scan_id} started {cutoff.started_at.isoformat()}"
    print(f"nightly: {note}\nnightly: fakescan {' '.join(argv)}", file=sys.stderr, flush=True)
    if args.dry_run:
        return 0
    reconcile_before(settings)
    from fakescan.cli import build_parser

    scan_args = build_parser().parse_args(argv)
    return int(scan_args.handler(scan_args, settings) or 0)


def reconcile_before(settings: Settings) -> None:
    """Lost batches of earlier scans go back to the workers before a new scan is added (broker only)."""
    if not settings.broker_url:
        return
    from fakescan.db.engine import make_engine, make_sessionmaker
    from fakescan.queue import CeleryDispatcher
    from scheduler.reconcile import Reconciler

    engine, dispatcher = make_engine(settings), CeleryDispatcher(settings)
    try:
        report = Reconciler(make_sessionmaker(engine), settings, dispatcher).run_until_settled()
    finally:
        dispatcher.close()
        engine.dispose()
    if report.requeued or report.ended:
        print(f"nightly: reconciled: {len(report.requeued)} lost batches re-enqueued, "
              f"{len(report.ended)} scans ended", file=sys.stderr, flush=True)


def find_cutoff(args: argparse.Namespace, settings: Settings) -> LastSuccess | None:
    from fakescan.catalog import scan_detector_specs
    from fakescan.db.engine import make_engine, make_sessionmaker
    from fakescan.db.migrate import ensure_schema
    from fakescan.storage import open_store
    from scheduler.options import build_filter, filter_as_json, resolve_detectors
    from scheduler.scan import canonical_source

    source = canonical_source(open_store(args.source, settings))
    specs = scan_detector_specs(args.detector, settings)  # the same list the scan it starts will run
    detectors = [ref.as_json() for ref in resolve_detectors(specs, settings)]
    filters = filter_as_json(build_filter(args.ext, args.glob, None, None, None))
    engine = make_engine(settings)
    try:
        ensure_schema(settings, engine)
        with make_sessionmaker(engine)() as session:
            return last_success(session, source, detectors, filters)
    finally:
        engine.dispose()


def parse_overlap(text: str) -> timedelta:
    from scheduler.options import parse_age

    overlap = parse_age(text)
    if overlap is None:
        raise UsageError(f"bad --overlap {text!r}: use an age like 30m, 1h, 2d (0s for none)")
    return overlap


def scan_argv(args: argparse.Namespace, since: datetime | None) -> list[str]:
    argv = ["scan", args.source]
    for detector in args.detector or ():
        argv += ["--detector", detector]
    if args.ext is not None:
        argv += ["--ext", args.ext]
    for pattern in args.glob or ():
        argv += ["--glob", pattern]
    if args.batch_size is not None:
        argv += ["--batch-size", str(args.batch_size)]
    if since is not None:
        argv += ["--since", since.isoformat()]
    if args.wait:
        argv.append("--wait")
    return argv
