"""The worker's side of delivery: a lease while a batch runs, redeliveries counted, start-up checks.

- **Lease**: while a batch runs, its worker renews ``fakescan:lease:<queue>:<scan>:<batch>`` in
  Redis every few seconds (TTL ``LEASE_SECONDS``). The reconciler (``scheduler/reconcile.py``)
  treats a batch with a live lease as running, even after a broker restart lost its message.
- **Deliveries**: each start of (scan, batch, retry attempt) increments a counter; a second start
  of the same attempt is a redelivery (visibility timeout expired, worker lost, or a reconciler
  re-enqueue), logged with the batch and counted in ``fakescan_batch_redeliveries_total``.
- **Start-up checks**: the visibility timeout must exceed the longest retry wait plus the batch
  budget, or Redis hands live batches to a second worker; a broker without persistence loses
  queued batches on restart (the reconciler recovers them, late).

Nothing here may fail a batch: a broker hiccup while renewing a lease is logged, not raised.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from fakescan.errors import UsageError
from fakescan.queue import (
    DELIVERY_COUNT_SECONDS,
    LEASE_SECONDS,
    broker_persistence,
    delivery_key,
    lease_key,
    redis_client,
)
from fakescan.settings import Settings
from worker import metrics

log = logging.getLogger(__name__)


class BatchLease:
    """``with BatchLease(settings, scan_id, batch):`` keeps the batch's lease alive while it runs."""

    def __init__(self, settings: Settings, scan_id: int, batch: int) -> None:
        self.key = lease_key(settings.queue, scan_id, batch)
        self.settings = settings
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: Any = None

    def __enter__(self) -> "BatchLease":
        try:
            self._client = redis_client(self.settings)
        except Exception:
            log.warning("no lease for %s: the broker is unreachable", self.key, exc_info=True)
            return self
        self._renew()
        self._thread = threading.Thread(target=self._keep, name="batch-lease", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._client is not None:
            try:
                self._client.delete(self.key)
            except Exception:
                log.debug("could not drop lease %s", self.key, exc_info=True)
            self._client.close()

    def _keep(self) -> None:
        while not self._stop.wait(LEASE_SECONDS / 3):
            self._renew()

    def _renew(self) -> None:
        try:
            self._client.set(self.key, "1", ex=LEASE_SECONDS)
        except Exception as error:  # the broker restarting: the next renewal writes it again
            log.warning("could not renew lease %s: %s", self.key, error)


def record_delivery(settings: Settings, scan_id: int, batch: int, retries: int, redelivered_flag: bool) -> int:
    """This start's number among starts of the same retry attempt (1 = first); counts redeliveries."""
    try:
        client = redis_client(settings)
        try:
            key = delivery_key(settings.queue, scan_id, batch, retries)
            pipeline = client.pipeline()
            pipeline.incr(key)
            pipeline.expire(key, DELIVERY_COUNT_SECONDS)
            delivery = int(pipeline.execute()[0])
        finally:
            client.close()
    except Exception as error:
        log.warning("could not count the delivery of scan %s batch %s: %s", scan_id, batch, error)
        delivery = 2 if redelivered_flag else 1
    if delivery > 1 or redelivered_flag:
        log.warning("scan %s batch %s: redelivered (delivery %d of attempt %d): a worker was lost, the "
                    "visibility timeout expired or the reconciler re-enqueued it", scan_id, batch,
                    max(delivery, 2), retries + 1)
        metrics.observe_redelivery()
    return delivery


def visibility_needed(settings: Settings, batches_held: int = 1) -> int:
    """Seconds a batch's message may stay unacknowledged: the longest retry wait, plus one batch
    budget per batch its worker holds (a batch reserved behind a running one waits for it, and
    Redis counts from the delivery, not from the start)."""
    return settings.retry_backoff_max + batches_held * settings.batch_budget


def check_visibility_timeout(settings: Settings) -> None:
    """Refuse a visibility timeout Redis would hit while a batch still runs or waits for its retry."""
    needed = visibility_needed(settings)
    if settings.visibility_timeout <= needed:
        raise UsageError(
            f"FAKESCAN_VISIBILITY_TIMEOUT={settings.visibility_timeout}s is not above the longest retry wait "
            f"(FAKESCAN_RETRY_BACKOFF_MAX={settings.retry_backoff_max}s) plus the batch budget "
            f"(FAKESCAN_BATCH_BUDGET={settings.batch_budget}s) = {needed}s: Redis would hand batches that are "
            "still running or waiting to retry to a second worker; raise the timeout or lower the others")


def warn_if_broker_not_durable(settings: Settings) -> dict[str, bool] | None:
    """Log a warning when the broker keeps no append-only file; returns what it reported (None: unknown)."""
    try:
        persistence = broker_persistence(settings)
    except Exception as error:
        log.warning("could not ask the broker about persistence: %s", error)
        return None
    if not persistence["aof"]:
        log.warning("the broker (Redis) runs without an append-only file (appendonly no%s): a restart loses "
                    "every queued batch, which the reconciler re-enqueues only after "
                    "FAKESCAN_RECONCILE_GRACE; run Redis with --appendonly yes --appendfsync everysec",
                    ", RDB snapshots only" if persistence["rdb"] else ", no snapshots")
    return persistence
