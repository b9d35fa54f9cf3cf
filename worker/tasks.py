"""The Celery task: ``fakescan.scan_batch(scan_id, object_ids, batch=0)`` runs one batch.

Why each option (see also ``fakescan.queue`` for the app-wide delivery settings):

- ``acks_late`` / ``reject_on_worker_lost``: the message is acknowledged only after the batch's
  transaction committed; a worker killed mid-batch leaves it unacknowledged and Redis hands it
  to another worker after the visibility timeout. The rows are upserts, so a batch that runs
  twice writes each row once.
- infrastructure faults only (S3 unreachable, 5xx or cut off, database down) are retried, with
  exponential backoff and full jitter so a fleet recovering from an outage does not stampede;
  capped at ``FAKESCAN_RETRY_BACKOFF_MAX`` seconds and ``FAKESCAN_BATCH_MAX_RETRIES`` retries.
  A batch that outlasts them, or crashes on a bug (not retried, it fails loudly), is *given up*:
  its items become ``given-up`` and the scan ends ``failed`` with the reason once its other
  batches are in (``fakescan scan resume`` queues them again). Bad input never reaches here: it
  is a result row.
- while the batch runs its lease is renewed in Redis, and a second start of the same attempt is
  counted as a redelivery (``worker/delivery.py``).
- on a worker that reads ahead (threads pool, one thread: ``worker.celery_app``) a batch, once its
  objects are decoded, starts fetching the objects of the batch the worker holds next, and takes
  the fetches made for it when it starts (``worker/prefetch.py``). Nothing is written ahead.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any, Callable

from celery import shared_task
from sqlalchemy.exc import InterfaceError, OperationalError

from fakescan.db.scans import give_up_batch
from fakescan.queue import SCAN_BATCH_TASK
from fakescan.settings import Settings
from worker.delivery import BatchLease, record_delivery
from worker.fetch import InfrastructureFault
from worker.memory import release_free_memory
from worker.pipeline import BatchReport, process_batch
from worker.prefetch import ReadAhead, reserved_batch
from worker.runtime import WorkerRuntime, process_runtime, reads_ahead, worker_settings

log = logging.getLogger(__name__)

TRANSIENT_FAULTS = (InfrastructureFault, OperationalError, InterfaceError, ConnectionError, TimeoutError)
RETRY_BACKOFF_BASE = 2  # seconds; doubled per retry, capped at FAKESCAN_RETRY_BACKOFF_MAX, full jitter


@shared_task(name=SCAN_BATCH_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None,
             ignore_result=True)
def scan_batch(self: Any, scan_id: int, object_ids: list[int], batch: int = 0) -> dict[str, object]:
    retries = int(self.request.retries or 0)
    eager = bool(self.request.is_eager)
    try:
        runtime = process_runtime()  # connects to the database: a fault here is retried too
        return _run(runtime, scan_id, object_ids, batch, retries, self.request.delivery_info, eager=eager)
    except TRANSIENT_FAULTS as fault:
        settings = worker_settings()
        attempt = retries + 1
        log.warning("scan %s batch %s: %s (attempt %d of %d)", scan_id, batch, fault, attempt,
                    settings.batch_max_retries + 1)
        if retries >= settings.batch_max_retries:
            _give_up(scan_id, batch, f"batch {batch} gave up after {attempt} attempts: {type(fault).__name__}: {fault}")
            raise
        raise self.retry(exc=fault, countdown=retry_delay(retries, settings)) from fault
    except Exception as error:
        _give_up(scan_id, batch, f"batch {batch} crashed: {type(error).__name__}: {error}")
        raise


def _run(runtime: WorkerRuntime, scan_id: int, object_ids: list[int], batch: int, retries: int,
         delivery_info: dict[str, Any] | None, *, eager: bool) -> dict[str, object]:
    settings = runtime.settings
    if settings.broker_url and not eager:
        record_delivery(settings, scan_id, batch, retries, bool((delivery_info or {}).get("redelivered")))
    started = time.monotonic()
    read_ahead = runtime.read_ahead if reads_ahead() and not eager else None
    ahead = read_ahead.take(scan_id, batch, object_ids) if read_ahead is not None else None
    with _lease(settings, scan_id, batch, eager=eager):
        report = process_batch(settings, runtime.sessions, scan_id, object_ids, runtime.cache, batch, ahead=ahead,
                               read_next=_next_batch_fetcher(read_ahead, scan_id, batch))
    release_free_memory()  # the batch's freed heap back to the kernel before the next one (worker/memory.py)
    _warn_if_over_budget(settings, scan_id, batch, time.monotonic() - started)
    return report_fields(report)


def _next_batch_fetcher(read_ahead: ReadAhead | None, scan_id: int, batch: int) -> Callable[[], None] | None:
    """What the running batch calls once its objects are decoded: fetch the reserved batch's objects."""
    if read_ahead is None:
        return None

    def fetch_next() -> None:
        upcoming = reserved_batch((scan_id, batch))
        if upcoming is not None:
            read_ahead.start(*upcoming)

    return fetch_next


def retry_delay(retries: int, settings: Settings) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**retries)]."""
    return random.uniform(0, min(settings.retry_backoff_max, RETRY_BACKOFF_BASE * 2 ** retries))


def _lease(settings: Settings, scan_id: int, batch: int, *, eager: bool) -> Any:
    import contextlib

    if not settings.broker_url or eager:
        return contextlib.nullcontext()
    return BatchLease(settings, scan_id, batch)


def _give_up(scan_id: int, batch: int, reason: str) -> None:
    """The batch's items become given-up and the scan keeps the reason (when the database can still
    record it; if not, they stay queued and the reconciler re-enqueues the batch later)."""
    try:
        with process_runtime().sessions.begin() as session:
            given_up = give_up_batch(session, scan_id, batch, reason)
        log.error("scan %s: %s; %d items given up", scan_id, reason, given_up)
    except Exception:
        log.exception("scan %s: could not record the failure %r", scan_id, reason)


def _warn_if_over_budget(settings: Settings, scan_id: int, batch: int, seconds: float) -> None:
    if seconds > settings.batch_budget:
        log.warning("scan %s batch %s took %.0fs, over FAKESCAN_BATCH_BUDGET=%ds: raise the budget and the "
                    "visibility timeout with it, or lower the batch size", scan_id, batch, seconds,
                    settings.batch_budget)


def report_fields(report: BatchReport) -> dict[str, object]:
    return {"objects": report.objects, "ok": report.ok, "errors": report.errors, "skipped": report.skipped,
            "fetched_ahead": report.fetched_ahead, "stage_seconds": report.stage_seconds}
