"""The embedded default: without a broker, ``fakescan scan`` runs each batch in its own process.

Same batch function, same writer, same rows as a Celery worker; only the delivery differs. The
scheduler tells the dispatcher which batch comes next (``expect``), so its objects are fetched
while the current batch is scored (``worker.prefetch``).
"""

from __future__ import annotations

import logging
from typing import Sequence

from fakescan.settings import Settings
from worker.memory import prepare_worker_process, release_free_memory
from worker.pipeline import BatchReport, process_batch
from worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)


class InProcessDispatcher:
    """Callable ``(scan_id, batch_number, object_ids)`` that scores the batch before returning."""

    def __init__(self, settings: Settings) -> None:
        prepare_worker_process(settings)
        self.runtime = WorkerRuntime.build(settings)
        self.reports: list[BatchReport] = []
        self.read_ahead = self.runtime.read_ahead
        self._next: tuple[int, int, list[int]] | None = None

    def expect(self, scan_id: int, batch: int, object_ids: Sequence[int]) -> None:
        """``batch`` is the one dispatched after the next call: fetch it while that call runs."""
        self._next = (scan_id, batch, list(object_ids))

    def __call__(self, scan_id: int, batch: int, object_ids: Sequence[int]) -> None:
        runtime = self.runtime
        ahead = self.read_ahead.take(scan_id, batch, object_ids)
        upcoming, self._next = self._next, None
        read_next = None
        if upcoming is not None and upcoming[:2] != (scan_id, batch) and runtime.settings.read_ahead:
            def read_next() -> None:
                self.read_ahead.start(*upcoming)
        try:
            report = process_batch(runtime.settings, runtime.sessions, scan_id, list(object_ids), runtime.cache,
                                   batch, ahead=ahead, read_next=read_next)
        except BaseException:
            self.read_ahead.discard()  # the scan stops here (embedded batches are not retried)
            raise
        self.reports.append(report)
        release_free_memory()

    def close(self) -> None:
        self.runtime.close()
