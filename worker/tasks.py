"""The Celery task: ``fakescan.scan_batch(scan_id, object_ids, batch=0)`` runs one batch.

Why each option (see also ``fakescan.queue`` for the app-wide delivery settings):

- ``acks_late`` / ``reject_on_worker_lost``: the message is acknowledged only after the batch's
  transaction committed; a worker killed mid-batch leaves it unacknowledged and Redis hands it
  to another worker after the visibility timeout. The rows are upserts, so a batch that runs
  twice writes each row once.
- ``autoretry_for`` infrastructure faults only (S3 unreachable or 5xx, database down), with
  exponential backoff and full jitter so a fleet recovering from an outage does not stampede;
  capped at ``RETRY_BACKOFF_MAX`` seconds and ``MAX_RETRIES`` attempts; the last failed attempt
  marks the scan failed with the fault. Bad input never reaches here (it is a result row) and a
  bug is not retried: it fails loudly and marks the scan failed.
"""

from __future__ import annotations

import logging

from celery import shared_task
from sqlalchemy.exc import InterfaceError, OperationalError

from fakescan.db.scans import mark_failed
from fakescan.queue import SCAN_BATCH_TASK
from worker.fetch import InfrastructureFault
from worker.pipeline import BatchReport, process_batch
from worker.runtime import WorkerRuntime, process_runtime

log = logging.getLogger(__name__)

TRANSIENT_FAULTS = (InfrastructureFault, OperationalError, InterfaceError, ConnectionError, TimeoutError)
MAX_RETRIES = 8
RETRY_BACKOFF_MAX = 300  # seconds; keep below the visibility timeout (a waiting retry is unacknowledged too)


@shared_task(name=SCAN_BATCH_TASK, bind=True, acks_late=True, reject_on_worker_lost=True,
             autoretry_for=TRANSIENT_FAULTS, retry_backoff=2, retry_backoff_max=RETRY_BACKOFF_MAX,
             retry_jitter=True, max_retries=MAX_RETRIES, ignore_result=True)
def scan_batch(self, scan_id: int, object_ids: list[int], batch: int = 0) -> dict[str, object]:
    runtime = process_runtime()
    try:
        report = process_batch(runtime.settings, runtime.sessions, scan_id, object_ids, runtime.cache, batch)
    except TRANSIENT_FAULTS as fault:
        attempt = self.request.retries + 1
        log.warning("scan %s batch %s: %s (attempt %d of %d)", scan_id, batch, fault, attempt, MAX_RETRIES + 1)
        if self.request.retries >= MAX_RETRIES:  # Celery gives up after this: say so where users look
            _fail_scan(runtime, scan_id, f"batch {batch} gave up after {attempt} attempts: "
                                         f"{type(fault).__name__}: {fault}")
        raise
    except Exception as error:
        _fail_scan(runtime, scan_id, f"batch {batch} crashed: {type(error).__name__}: {error}")
        raise
    return report_fields(report)


def _fail_scan(runtime: WorkerRuntime, scan_id: int, reason: str) -> None:
    """The scan shows the reason in ``fakescan status`` (when the database can still record it);
    the task's traceback is logged. Its unfinished items stay queued: a re-run scan enqueues them."""
    try:
        with runtime.sessions.begin() as session:
            mark_failed(session, scan_id, reason)
    except Exception:
        log.exception("scan %s: could not record the failure %r", scan_id, reason)


def report_fields(report: BatchReport) -> dict[str, object]:
    return {"objects": report.objects, "ok": report.ok, "errors": report.errors, "skipped": report.skipped,
            "stage_seconds": report.stage_seconds}
