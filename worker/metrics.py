"""Worker metrics for Prometheus, served on ``FAKESCAN_METRICS_PORT`` by each worker.

- ``fakescan_images_scanned_total{detector,status,verdict}``: result rows written
  (``verdict="none"`` for error rows and detectors without a threshold);
- ``fakescan_batch_seconds`` and ``fakescan_batch_objects``: batch latency and size;
- ``fakescan_stage_seconds{stage}``: time per batch in fetch, decode, inference, write;
- ``fakescan_model_load_seconds{detector}``: building a detector in a worker process;
- ``fakescan_batch_redeliveries_total``: batches started again for the same attempt (see
  ``worker/delivery.py``);
- ``fakescan_objects_fetched_ahead_total``: objects a batch found fetched before it started
  (next-batch read-ahead, ``worker/prefetch.py``).

A solo or threads pool runs batches in the process that serves the endpoint. A prefork pool
runs them in child processes: there prometheus_client's multiprocess mode is used, each child
writing its samples to files under ``PROMETHEUS_MULTIPROC_DIR`` (a fresh temporary folder when
unset) and the parent serving their sum; with that variable set, any pool uses the files.
prometheus_client picks its value store when it is first imported, so nothing here imports it
before :func:`serve` has set that folder. Recording a metric never fails a batch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from fakescan.settings import Settings

log = logging.getLogger(__name__)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# seconds; a batch is tens of images on a GPU or a CPU, fetched over the network
BATCH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
LOAD_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
STAGES = ("fetch", "decode", "inference", "write")  # a batch's stages, as worker.pipeline times them


class _Metrics:
    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        self.images = Counter("fakescan_images_scanned", "result rows written, by detector, status and verdict",
                              ["detector", "status", "verdict"])
        self.batch_seconds = Histogram("fakescan_batch_seconds", "wall time of one batch, from load to commit",
                                       buckets=BATCH_BUCKETS)
        self.batch_objects = Histogram("fakescan_batch_objects", "objects written per batch", buckets=SIZE_BUCKETS)
        self.stage_seconds = Histogram("fakescan_stage_seconds", "seconds a batch spent in each stage", ["stage"],
                                       buckets=BATCH_BUCKETS)
        self.redeliveries = Counter("fakescan_batch_redeliveries", "batches started again for the same attempt "
                                    "(worker lost, visibility timeout, reconciler re-enqueue)")
        self.fetched_ahead = Counter("fakescan_objects_fetched_ahead", "objects a batch found fetched before it "
                                     "started (next-batch read-ahead)")
        self.model_load_seconds = Histogram("fakescan_model_load_seconds", "seconds to build a detector in a process",
                                            ["detector"], buckets=LOAD_BUCKETS)
        for stage in STAGES:  # every stage's series exists (at zero) before the first batch
            self.stage_seconds.labels(stage)


_metrics: _Metrics | None = None
_metrics_lock = threading.Lock()


def _get() -> _Metrics:
    global _metrics
    with _metrics_lock:
        if _metrics is None:
            if os.environ.get(MULTIPROC_ENV):  # samples are files there, whatever the pool
                Path(os.environ[MULTIPROC_ENV]).mkdir(parents=True, exist_ok=True)
            _metrics = _Metrics()
        return _metrics


def observe_batch(seconds: float, objects: int, stage_seconds: Mapping[str, float],
                  rows: Iterable[Mapping[str, Any]], fetched_ahead: int = 0) -> None:
    """One committed batch: its latency, size, stage times, the rows it wrote and its objects fetched ahead."""
    with _never_fails("batch"):
        metrics = _get()
        metrics.batch_seconds.observe(seconds)
        metrics.batch_objects.observe(objects)
        metrics.fetched_ahead.inc(fetched_ahead)
        for stage, spent in stage_seconds.items():
            metrics.stage_seconds.labels(stage).observe(spent)
        for row in rows:
            metrics.images.labels(row["detector"], row["status"], row.get("verdict") or "none").inc()


def observe_redelivery() -> None:
    with _never_fails("redelivery"):
        _get().redeliveries.inc()


def observe_model_load(detector: str, seconds: float) -> None:
    with _never_fails("model load"):
        _get().model_load_seconds.labels(detector).observe(seconds)


@contextlib.contextmanager
def _never_fails(what: str) -> Iterator[None]:
    """The batch's results are committed by now: a broken metrics store must not fail the task."""
    try:
        yield
    except Exception:
        log.error("could not record the %s metrics", what, exc_info=True)


def install(settings: Settings) -> None:
    """Serve the endpoint when the Celery worker starts, if ``FAKESCAN_METRICS_PORT`` is set."""
    if settings.metrics_port is None:
        return
    from celery import signals

    port, address = settings.metrics_port, settings.metrics_address

    def start(sender: Any = None, **_: Any) -> None:
        multiprocess = _is_prefork(sender) or bool(os.environ.get(MULTIPROC_ENV))
        serve(port, multiprocess=multiprocess, address=address)

    # worker_app() may run more than once in a process; one endpoint per worker
    signals.worker_init.connect(start, weak=False, dispatch_uid="fakescan-metrics-endpoint")


def _is_prefork(worker: Any) -> bool:
    pool = getattr(worker, "pool_cls", None)
    return "prefork" in str(getattr(pool, "__module__", pool))


def serve(port: int, *, multiprocess: bool, address: str = "127.0.0.1") -> Any:
    """Start the HTTP endpoint in a background thread of this process; returns the server.

    The metrics are created first, so the first scrape already lists them (at zero), not an empty
    page that a dashboard cannot tell from a broken worker.
    """
    if multiprocess:
        folder = prepare_multiprocess_dir()
        with _never_fails("start-up"):
            _get()  # this process's zero samples; pool processes forked later write their own files
        from prometheus_client import CollectorRegistry
        from prometheus_client import multiprocess as prometheus_multiprocess

        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry, path=str(folder))
    else:
        from prometheus_client import REGISTRY as registry  # noqa: N811 - the default, per-process registry

        with _never_fails("start-up"):
            _get()
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=address, registry=registry)
    log.info("metrics on http://%s:%d/metrics (%s)", address, port,
             "summed over the prefork pool" if multiprocess else "this process")
    return server


def prepare_multiprocess_dir() -> Path:
    """The folder the pool's processes write to, emptied: samples of an earlier run must not count."""
    if not os.environ.get(MULTIPROC_ENV):
        os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="fakescan-metrics-")
    folder = Path(os.environ[MULTIPROC_ENV])
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()
    from prometheus_client.values import MutexValue, ValueClass

    if ValueClass is MutexValue:  # chosen at import, before the folder was known
        log.warning("prometheus_client was imported before %s was set: prefork metrics will be incomplete; "
                    "set %s in the worker's environment", MULTIPROC_ENV, MULTIPROC_ENV)
    return folder
