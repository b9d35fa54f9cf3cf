"""The embedded default: without a broker, ``fakescan scan`` runs each batch in its own process.

Same batch function, same writer, same rows as a Celery worker; only the delivery differs.
"""

from __future__ import annotations

import logging
from typing import Sequence

from fakescan.settings import Settings
from worker.pipeline import BatchReport, process_batch
from worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)


class InProcessDispatcher:
    """Callable ``(scan_id, batch_number, object_ids)`` that scores the batch before returning."""

    def __init__(self, settings: Settings) -> None:
        self.runtime = WorkerRuntime.build(settings)
        self.reports: list[BatchReport] = []

    def __call__(self, scan_id: int, batch: int, object_ids: Sequence[int]) -> None:
        runtime = self.runtime
        report = process_batch(runtime.settings, runtime.sessions, scan_id, list(object_ids), runtime.cache, batch)
        self.reports.append(report)

    def close(self) -> None:
        self.runtime.close()
