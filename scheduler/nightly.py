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

from sqlalchemy.orm import Session, sessionmaker

from fakescan.db.queries import successful_scans
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
    wanted_detectors = _detector_keys(detectors)
    for scan_id, started_at, created_at, scan_detectors, options in successful_scans(session, source, CANDIDATES):
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
    from fakescan.db.database import open_database

    overlap = parse_overlap(args.overlap)
    source, detectors, filters = wanted_listing(args, settings)
    with open_database(settings) as database:
        with database.sessions() as session:
            cutoff = last_success(session, source, detectors, filters)
        argv = scan_argv(args, cutoff.started_at - overlap if cutoff else None)
        if cutoff is None:
            note = f"no earlier successful scan of {args.source} with these detectors and filters: full scan"
        else:
            note = f"last successful scan {cutoff.scan_id} started {cutoff.started_at.isoformat()}"
        print(f"nightly: {note}\nnightly: fakescan {' '.join(argv)}", file=sys.stderr, flush=True)
        if args.dry_run:
            return 0
        reconcile_before(settings, database.sessions)
    from fakescan.cli import build_parser

    scan_args = build_parser().parse_args(argv)
    return int(scan_args.handler(scan_args, settings) or 0)


def reconcile_before(settings: Settings, sessions: sessionmaker[Session]) -> None:
    """Lost batches of earlier scans go back to the workers before a new scan is added (broker only)."""
    if not settings.broker_url:
        return
    from fakescan.queue import CeleryDispatcher
    from scheduler.reconcile import Reconciler

    dispatcher = CeleryDispatcher(settings)
    try:
        report = Reconciler(sessions, settings, dispatcher).run_until_settled()
    finally:
        dispatcher.close()
    if report.requeued or report.ended:
        print(f"nightly: reconciled: {len(report.requeued)} lost batches re-enqueued, "
              f"{len(report.ended)} scans ended", file=sys.stderr, flush=True)


def wanted_listing(args: argparse.Namespace, settings: Settings) -> tuple[str, list[dict[str, str]], dict[str, Any]]:
    """The source, detectors and listing filters of the scan this run starts, as a scan row records them."""
    from fakescan.catalog import scan_detector_specs
    from fakescan.storage import open_store
    from scheduler.options import build_filter, filter_as_json, resolve_detectors
    from scheduler.scan import canonical_source

    source = canonical_source(open_store(args.source, settings))
    specs = scan_detector_specs(args.detector, settings)  # the same list the scan it starts will run
    detectors = [ref.as_json() for ref in resolve_detectors(specs, settings)]
    return source, detectors, filter_as_json(build_filter(args.ext, args.glob, None, None, None))


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
