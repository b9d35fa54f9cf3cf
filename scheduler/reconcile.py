"""The reconciler: a scan always ends. Batches the broker lost are found and enqueued again.

A batch is *lost* when its items are still ``queued`` but the broker neither holds its message
(queue lists, or reserved by a worker in the unacked hash) nor has a live lease from a worker
running it (``fakescan.queue.batches_in_broker``). That happens when Redis restarts without
persistence, when a scheduler dies between committing a batch's items and sending it, or when a
crashed task's failure could not be recorded. Two rules keep a live batch from being sent twice:

- **grace**: the items must have been queued (or last re-enqueued) ``FAKESCAN_RECONCILE_GRACE``
  seconds ago, so a batch the scheduler is about to send is left alone;
- **seen missing twice**: the batch must be absent in two looks at the broker at least
  ``CONFIRM_SECONDS`` apart (a worker popping a message holds it in neither place for an instant).

Re-enqueueing stamps the items, so the same batch waits another grace period before it can be
sent again. A re-enqueued batch that was not lost after all runs twice and writes the same rows
(results are upserts). Run by ``fakescan scan --wait``, ``fakescan nightly`` and ``fakescan
reconcile`` (a loop; the Helm chart runs it as a Deployment). Never imports torch.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Callable

from sqlalchemy.orm import Session, sessionmaker

from fakescan.db import batches, scans
from fakescan.db.models import utcnow
from fakescan.settings import Settings

log = logging.getLogger("fakescan.reconciler")
CONFIRM_SECONDS = 2.0
Dispatch = Callable[[int, int, list[int]], None]


@dataclass
class PassReport:
    scans: int = 0  # active scans looked at
    missing: int = 0  # batches seen missing (waiting for confirmation or grace)
    requeued: list[tuple[int, int, int]] = field(default_factory=list)  # (scan, batch, objects)
    ended: list[int] = field(default_factory=list)  # scans this pass saw end


@dataclass
class Reconciler:
    sessions: sessionmaker[Session]
    settings: Settings
    dispatch: Dispatch
    grace: float | None = None  # seconds; None: FAKESCAN_RECONCILE_GRACE
    broker_view: Callable[[Settings], set[tuple[int, int]]] | None = None
    _missing_since: dict[tuple[int, int], float] = field(default_factory=dict)
    _last_pass: float = float("-inf")

    @property
    def poll_seconds(self) -> float:
        """How often a waiting scan looks: a quarter of the grace period, between 2 s and 30 s."""
        grace = self.settings.reconcile_grace if self.grace is None else self.grace
        return max(CONFIRM_SECONDS, min(30.0, grace / 4))

    def run_pass(self, scan_ids: list[int] | None = None, *, now: float | None = None) -> PassReport:
        """One look: end scans that are complete, re-enqueue batches confirmed lost."""
        from fakescan.queue import batches_in_broker

        now = time.monotonic() if now is None else now
        report = PassReport()
        candidates = self._queued_batches(scan_ids, report)
        if not candidates:
            self._missing_since.clear()
            return report
        present = (self.broker_view or batches_in_broker)(self.settings)
        missing = {key for key in candidates if key not in present}
        self._missing_since = {key: self._missing_since.get(key, now) for key in missing}
        report.missing = len(missing)
        for key in sorted(missing):
            if now - self._missing_since[key] >= CONFIRM_SECONDS:
                self._requeue(*key, report)
                self._missing_since.pop(key, None)
        return report

    def run_pass_every(self, seconds: float, scan_ids: list[int] | None = None) -> PassReport | None:
        """``run_pass`` at most once per ``seconds`` (a poll loop calls this every second; a look at
        the broker reads every waiting message, too much to do each second for a long queue)."""
        now = time.monotonic()
        if now - self._last_pass < seconds:
            return None
        self._last_pass = now
        return self.run_pass(scan_ids, now=now)

    def run_until_settled(self, scan_ids: list[int] | None = None) -> PassReport:
        """For one-shot callers (``nightly``): two looks ``CONFIRM_SECONDS`` apart."""
        first = self.run_pass(scan_ids)
        if not first.missing:
            return first
        time.sleep(CONFIRM_SECONDS)
        second = self.run_pass(scan_ids)
        second.ended = first.ended + second.ended
        return second

    def _queued_batches(self, scan_ids: list[int] | None, report: PassReport) -> set[tuple[int, int]]:
        """Batches of active scans with queued items older than the grace period; ends complete scans."""
        grace = self.settings.reconcile_grace if self.grace is None else self.grace
        cutoff = utcnow() - timedelta(seconds=grace)
        with self.sessions() as session:
            active = batches.active_scan_ids(session, scan_ids)
            report.scans = len(active)
            for scan_id in active:
                if scans.finish_if_complete(session, scan_id):
                    report.ended.append(scan_id)
            session.commit()
            if not active:
                return set()
            return {key for key, stamp in batches.queued_batches(session, active).items() if stamp <= cutoff}

    def _requeue(self, scan_id: int, batch: int, report: PassReport) -> None:
        with self.sessions() as session:
            ids = batches.restamp_queued_batch(session, scan_id, batch)
            if not ids:
                return
            session.commit()
        self.dispatch(scan_id, batch, ids)
        report.requeued.append((scan_id, batch, len(ids)))
        log.warning("scan %d batch %d: neither in the broker nor running: re-enqueued (%d objects)",
                    scan_id, batch, len(ids))


def requeue_now(sessions: sessionmaker[Session], settings: Settings, dispatch: Dispatch, scan_id: int) -> PassReport:
    """``scan resume``: every queued batch of the scan that the broker does not hold, without grace."""
    reconciler = Reconciler(sessions, settings, dispatch, grace=0,
                            broker_view=None if settings.broker_url else _nothing_in_flight)
    return reconciler.run_until_settled([scan_id])


def _nothing_in_flight(_settings: Settings) -> set[tuple[int, int]]:
    """Embedded mode: batches run in the scheduler's own process, none is ever in flight."""
    return set()
