"""Scheduler commands: ``scan`` and ``status``. Never imports torch or the detectors.

``fakescan scan`` prints ``scan <id>`` as its first stdout line (flushed at once, so a wrapper
can read the id while the scan runs), then a summary. ``fakescan status --json`` prints one object.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from fakescan.errors import BrokerError, UsageError
from fakescan.settings import Settings

if TYPE_CHECKING:
    from scheduler.scan import Dispatch


def register(subparsers: argparse._SubParsersAction) -> None:
    scan = subparsers.add_parser(
        "scan", help="list a source, skip finished work, enqueue the rest; or: scan resume ID, scan cancel ID",
        description="fakescan scan SOURCE [options] | fakescan scan resume ID [--wait] | fakescan scan cancel ID")
    scan.add_argument("source", metavar="SOURCE", help="s3://bucket/prefix, file:///folder or a folder; "
                      "'resume ID' queues a scan's lost and given-up batches again, 'cancel ID' ends a scan "
                      "(a folder named resume or cancel: ./resume)")
    scan.add_argument("scan_id", nargs="?", metavar="ID", help="with resume or cancel: the scan")
    scan.add_argument("--detector", action="append", metavar="NAME",
                      help="detector name, folder or s3:// prefix; repeatable (default: FAKESCAN_DETECTORS); "
                           "provenance runs first unless FAKESCAN_SCAN_PROVENANCE=false")
    scan.add_argument("--batch-size", type=int, metavar="N", help="objects per task (default: FAKESCAN_BATCH_SIZE)")
    scan.add_argument("--since", metavar="WHEN",
                      help="only objects modified since: 2024-05-01, 2024-05-01T06:00Z, 36h, 7d")
    scan.add_argument("--rescan", action="store_true", help="enqueue every listed object, even if already scanned")
    scan.add_argument("--retry-errors", action="store_true",
                      help="also enqueue objects whose earlier result is an error row")
    scan.add_argument("--wait", action="store_true", help="with a broker: wait for the workers, showing progress")
    scan.add_argument("--wait-timeout", metavar="AGE",
                      help="with --wait: stop waiting after this long (90m, 6h, 1d); exit 1, the scan goes on")
    scan.add_argument("--ext", metavar=".jpg,.png", help="extensions to admit (default: common image types; 'any')")
    scan.add_argument("--glob", action="append", metavar="PATTERN", help="fnmatch pattern on the key; repeatable")
    scan.add_argument("--min-size", type=int, metavar="BYTES", help="skip objects smaller than this (listing size)")
    scan.add_argument("--max-size", type=int, metavar="BYTES", help="skip objects larger than this (listing size)")
    scan.set_defaults(handler=scan_command)

    reconcile = subparsers.add_parser(
        "reconcile", help="re-enqueue batches the broker lost and end complete scans, in a loop",
        description="Every INTERVAL: end scans whose items are all in; re-enqueue queued batches that are "
                    "neither in the broker nor running (after FAKESCAN_RECONCILE_GRACE). Needs a broker.")
    reconcile.add_argument("--interval", type=float, default=30.0, metavar="SECONDS", help="between passes (30)")
    reconcile.add_argument("--once", action="store_true", help="one pass (two looks at the broker), then exit")
    reconcile.set_defaults(handler=reconcile_command)

    status = subparsers.add_parser("status", help="progress of a scan (the latest by default)")
    status.add_argument("scan_id", nargs="?", type=int, metavar="SCAN_ID", help="the scan (default: the latest)")
    status.add_argument("--json", action="store_true", help="one JSON object")
    status.set_defaults(handler=status_command)


SCAN_ACTIONS = ("resume", "cancel")


def scan_command(args: argparse.Namespace, settings: Settings) -> int:
    if args.source in SCAN_ACTIONS:
        return _scan_action(args, settings)
    if args.scan_id is not None:
        raise UsageError(f"unexpected argument {args.scan_id!r}: scan takes one SOURCE (or: scan resume ID)")
    from fakescan.catalog import scan_detector_specs
    from fakescan.db.database import open_database
    from fakescan.storage import open_store
    from scheduler.options import build_filter, resolve_detectors
    from scheduler.scan import ScanRequest, canonical_source

    filters = build_filter(args.ext, args.glob, args.min_size, args.max_size, args.since)
    batch_size = settings.batch_size if args.batch_size is None else args.batch_size
    if batch_size <= 0:
        raise UsageError(f"--batch-size must be positive, got {batch_size}")
    timeout = _wait_timeout(args.wait_timeout)
    detectors = resolve_detectors(scan_detector_specs(args.detector, settings), settings)
    store = open_store(args.source, settings)
    store.check()
    request = ScanRequest(canonical_source(store), detectors, filters, batch_size,
                          rescan=args.rescan, retry_errors=args.retry_errors)
    with open_database(settings) as database:
        dispatcher = make_dispatcher(settings)
        try:
            # embedded scans are synchronous: they always end with the summary --wait gives
            return _run(database.sessions, store, request, dispatcher, settings, wait=args.wait or settings.embedded,
                        timeout=timeout)
        finally:
            dispatcher.close()  # type: ignore[attr-defined]


def _wait_timeout(text: str | None) -> float | None:
    from scheduler.options import parse_age

    if text is None:
        return None
    age = parse_age(text)
    if age is None or age.total_seconds() <= 0:
        raise UsageError(f"bad --wait-timeout {text!r}: use a positive age like 90m, 6h or 1d")
    return age.total_seconds()


def make_dispatcher(settings: Settings) -> "Dispatch":
    """Celery when a broker is configured; otherwise the worker pipeline in this very process."""
    if settings.broker_url:
        from fakescan.queue import CeleryDispatcher

        dispatcher = CeleryDispatcher(settings)
        _check_broker(dispatcher.app, settings.broker_url)
        return dispatcher
    from worker.inprocess import InProcessDispatcher  # embedded mode only: this loads torch

    return InProcessDispatcher(settings)


def _check_broker(app: Any, url: str) -> None:
    """Fail before creating the scan row, not after the first batch."""
    from kombu.exceptions import OperationalError as KombuOperationalError

    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=2, interval_start=0.2, interval_step=0.5)
    except (OSError, KombuOperationalError) as error:
        raise BrokerError(f"cannot reach the broker at {_redact(url)}: {error}") from None


def _run(sessions: Any, store: Any, request: Any, dispatcher: "Dispatch", settings: Settings, *, wait: bool,
         timeout: float | None = None) -> int:
    from scheduler.progress import ProgressBar
    from scheduler.scan import create_scan, run_scan

    scan_id = create_scan(sessions, request, "embedded" if settings.embedded else "broker")
    print(f"scan {scan_id}", flush=True)
    bar = ProgressBar(scan_id) if settings.embedded else None

    def show(counts: Any) -> None:
        if bar is not None:  # embedded: a batch is complete when dispatch returns
            bar.show(counts.enqueued, counts.enqueued, listed=counts.listed, skipped=counts.skipped)

    try:
        counts = run_scan(sessions, scan_id, store, request, dispatcher, on_progress=show)
    finally:
        if bar is not None:
            bar.close()
    if not wait:
        print(f"listed {counts.listed}  enqueued {counts.enqueued}  skipped {counts.skipped}  "
              f"batches {counts.batches}")
        print(f"follow with: fakescan status {scan_id}")
        return 0
    return _wait_and_report(sessions, scan_id, dispatcher, settings, timeout)


def _wait_and_report(sessions: Any, scan_id: int, dispatcher: "Dispatch", settings: Settings,
                     timeout: float | None) -> int:
    """Follow the scan to its end (the reconciler re-enqueueing lost batches meanwhile), print the
    summary, and say why when it did not finish; exit 0 only for ``finished``."""
    from fakescan.progress import ENDED_STATES
    from scheduler.progress import settle, wait_for_scan
    from scheduler.reconcile import Reconciler

    if settings.embedded:
        progress = settle(sessions, scan_id)
    else:
        reconciler = Reconciler(sessions, settings, dispatcher)
        progress = wait_for_scan(sessions, scan_id, timeout=timeout,
                                 tick=lambda: reconciler.run_pass_every(reconciler.poll_seconds, [scan_id]))
    _print_summary(sessions, scan_id, progress, settings)
    if progress.state not in ENDED_STATES:  # --wait-timeout ran out; the scan goes on
        print(f"fakescan: scan {scan_id} is still {progress.state} after --wait-timeout; "
              f"follow with: fakescan status {scan_id}", file=sys.stderr)
    elif progress.state != "finished":
        print(f"fakescan: scan {scan_id} {progress.state}: {progress.error or 'no reason recorded'}", file=sys.stderr)
    return 0 if progress.state == "finished" else 1


def _scan_action(args: argparse.Namespace, settings: Settings) -> int:
    """``scan resume ID`` and ``scan cancel ID``."""
    from fakescan.db.database import open_database

    if args.scan_id is None or not args.scan_id.isdigit():
        raise UsageError(f"scan {args.source} needs a scan id: fakescan scan {args.source} ID")
    with open_database(settings) as database:
        if args.source == "cancel":
            return _cancel(database.sessions, int(args.scan_id))
        return _resume(database.sessions, int(args.scan_id), settings, wait=args.wait,
                       timeout=_wait_timeout(args.wait_timeout))


def _cancel(sessions: Any, scan_id: int) -> int:
    from fakescan.db import scans

    with sessions() as session:
        scan = scans.get_scan(session, scan_id)
        queued = scans.item_counts(session, scan.id).get("queued", 0)
        cancelled = scans.cancel_scan(session, scan.id)
        session.commit()
        state = scan.state if not cancelled else "cancelled"
    if not cancelled:
        print(f"scan {scan_id} had already ended: {state}")
        return 0
    print(f"scan {scan_id} cancelled; {queued} objects were still queued (workers skip its batches)")
    return 0


def _resume(sessions: Any, scan_id: int, settings: Settings, *, wait: bool, timeout: float | None) -> int:
    from fakescan.db import scans
    from scheduler.reconcile import requeue_now

    with sessions() as session:
        scan = scans.get_scan(session, scan_id)
        if scan.state == "finished":
            print(f"scan {scan_id} finished: nothing to resume")
            return 0
        if scan.listing_finished_at is None and scan.state not in scans.ACTIVE_STATES:
            raise UsageError(f"scan {scan_id} ended while listing {scan.source} ({scan.error}): start a new scan "
                             "of it instead (finished objects are skipped)")
        given_up = scans.reopen_scan(session, scan_id)
        session.commit()
    dispatcher = make_dispatcher(settings)
    try:
        report = requeue_now(sessions, settings, dispatcher, scan_id)
        batches = len(report.requeued)
        print(f"scan {scan_id} resumed: {given_up} given-up objects queued again; {batches} batches "
              f"({sum(n for *_, n in report.requeued)} objects) re-enqueued")
        if not wait and not settings.embedded:
            print(f"follow with: fakescan status {scan_id}")
            return 0
        return _wait_and_report(sessions, scan_id, dispatcher, settings, timeout)
    finally:
        dispatcher.close()  # type: ignore[attr-defined]


def _print_summary(sessions: Any, scan_id: int, progress: Any, settings: Settings) -> None:
    """Counts of the scan: result rows (one per object and detector) by status and by detector,
    and the combined verdicts (one per object) under the policy in use."""
    from fakescan.db.queries import scan_outcomes_by_detector
    from fakescan.db.verdicts import verdict_counts
    from fakescan.verdicts import load_policy

    policy = load_policy(settings.verdict_policy)
    with sessions() as session:
        outcomes = scan_outcomes_by_detector(session, scan_id)
        combined = verdict_counts(session, policy.version, scan_id)
    statuses = {status: 0 for status in ("ok", "error")}
    detectors: dict[str, dict[str, int]] = {}
    for (detector, status, verdict), count in outcomes.items():
        statuses[status] = statuses.get(status, 0) + count
        tally = detectors.setdefault(detector, {})
        key = "error" if status != "ok" else (verdict or "none")  # "none": ok, but no evidence either way
        tally[key] = tally.get(key, 0) + count
    verdicts = {verdict: combined.get(verdict, 0) for verdict in ("fake", "real", "uncertain")}
    verdicts["none"] = combined.get(None, 0)
    print(f"listed {progress.listed}  enqueued {progress.enqueued}  skipped {progress.skipped}")
    print(f"done {progress.done}  error {progress.errors}  given-up {progress.given_up}  state {progress.state}")
    print("results " + "  ".join(f"{name} {count}" for name, count in statuses.items()))
    for detector, tally in sorted(detectors.items()):
        order = [k for k in ("fake", "real", "uncertain", "none", "error") if k in tally]
        print(f"  {detector}: " + "  ".join(f"{name} {tally[name]}" for name in order))
    print("verdicts " + "  ".join(f"{name} {count}" for name, count in verdicts.items())
          + f"  (one per object, policy {policy.version})")
    print(f"database {_database_location(settings)}")


def reconcile_command(args: argparse.Namespace, settings: Settings) -> int:
    from fakescan.db.database import open_database
    from scheduler.reconcile import Reconciler

    if args.interval <= 0:
        raise UsageError(f"--interval must be positive, got {args.interval:g}")
    if not settings.broker_url:
        raise UsageError("reconcile needs a broker: set FAKESCAN_BROKER_URL (embedded scans cannot lose batches)")
    with open_database(settings) as database:
        dispatcher = make_dispatcher(settings)
        try:
            _reconcile(Reconciler(database.sessions, settings, dispatcher), args, settings)
        finally:
            dispatcher.close()  # type: ignore[attr-defined]
    return 0


def _reconcile(reconciler: Any, args: argparse.Namespace, settings: Settings) -> None:
    """One settled pass with ``--once``, else a pass every ``--interval`` seconds until interrupted."""
    import logging
    import time

    if args.once:
        _print_pass(reconciler.run_until_settled())
        return
    log = logging.getLogger("fakescan.reconciler")
    log.info("reconciling every %gs (grace %ds)", args.interval, settings.reconcile_grace)
    while True:
        try:
            report = reconciler.run_pass()
            if report.requeued or report.ended:
                _print_pass(report)
        except Exception as error:  # the database or broker restarting: try again next pass
            log.warning("reconcile pass failed: %s: %s", type(error).__name__, error)
        time.sleep(args.interval)


def _print_pass(report: Any) -> None:
    print(f"reconcile: {report.scans} active scans, {len(report.requeued)} batches re-enqueued "
          f"({sum(n for *_, n in report.requeued)} objects), {len(report.ended)} scans ended", flush=True)


def status_command(args: argparse.Namespace, settings: Settings) -> int:
    from fakescan.db.database import open_database
    from fakescan.progress import read_progress

    with open_database(settings) as database, database.sessions() as session:
        progress = read_progress(session, args.scan_id)
    _print_status(progress, settings, as_json=args.json)
    return 0


def _print_status(progress: Any, settings: Settings, *, as_json: bool) -> None:
    """The scan's progress, and with a broker how many batches wait in its queue (None: unreachable)."""
    from fakescan.queue import queue_depth_or_none

    depth = queue_depth_or_none(settings) if settings.broker_url else None
    if as_json:
        data = progress.as_json()
        if settings.broker_url:
            data["queue_depth"] = depth
        print(json.dumps(data))
        return
    print(progress.as_text())
    if settings.broker_url:
        waiting = "unreachable" if depth is None else f"{depth} batches waiting"
        print(f"broker queue {settings.queue}: {waiting}")


def _database_location(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    url = make_url(settings.resolved_database_url())
    if url.get_backend_name() == "sqlite":
        return str(url.database)
    return url.render_as_string(hide_password=True)


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.split("@")[-1]

