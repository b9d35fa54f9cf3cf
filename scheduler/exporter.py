"""``fakescan exporter``: Prometheus gauges for the queue and the scans, read fresh on every scrape.

The workers export what they did (``worker/metrics.py``); this exports what is left: batches
waiting in the Celery queue (Redis list length) and each recent scan's progress from the results
database. It holds no state, so any number of replicas report the same figures. Never imports torch.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Iterator

from fakescan.settings import Settings

log = logging.getLogger("fakescan.exporter")
# scans reported one by one: every unfinished scan plus this many of the latest finished ones
RECENT_FINISHED = 5


class ScanCollector:
    """A prometheus_client collector; each ``collect`` asks Redis and the database once."""

    def __init__(self, settings: Settings, sessions: Any) -> None:
        self.settings = settings
        self.sessions = sessions

    def describe(self) -> list[Any]:
        return []  # figures are read at scrape time; nothing to declare up front

    def collect(self) -> Iterator[Any]:
        yield from self._queue_metrics()
        yield from self._scan_metrics()

    def _queue_metrics(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        if not self.settings.broker_url:
            return
        from fakescan.queue import queue_depth

        up = GaugeMetricFamily("fakescan_broker_up", "1 if the broker answered this scrape")
        depth = GaugeMetricFamily("fakescan_queue_depth", "batches waiting in the Celery queue (not yet taken "
                                  "by a worker)", labels=["queue"])
        try:
            depth.add_metric([self.settings.queue], queue_depth(self.settings))
            up.add_metric([], 1)
        except Exception as error:  # a scrape reports the outage instead of failing
            log.warning("broker unreachable: %s", error)
            up.add_metric([], 0)
        yield up
        yield depth

    def _scan_metrics(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily("fakescan_database_up", "1 if the results database answered this scrape")
        try:
            families = self._read_scans()
            up.add_metric([], 1)
        except Exception as error:
            log.warning("database unreachable: %s", error)
            families = []
            up.add_metric([], 0)
        yield up
        yield from families

    def _read_scans(self) -> list[Any]:
        from prometheus_client.core import GaugeMetricFamily

        from fakescan.db import queries
        from fakescan.progress import read_progress

        scans_by_state = GaugeMetricFamily("fakescan_scans", "scans by state", labels=["state"])
        items = GaugeMetricFamily("fakescan_scan_items", "enqueued objects of a scan by state",
                                  labels=["scan_id", "source", "state"])
        listed = GaugeMetricFamily("fakescan_scan_listed", "objects a scan listed so far", labels=["scan_id", "source"])
        skipped = GaugeMetricFamily("fakescan_scan_skipped", "listed objects skipped as already scanned",
                                    labels=["scan_id", "source"])
        rate = GaugeMetricFamily("fakescan_scan_images_per_second", "objects completed per second",
                                 labels=["scan_id", "source"])
        last_success = GaugeMetricFamily(
            "fakescan_source_last_finished_timestamp_seconds",
            "when the latest finished scan of a source finished (alert on a nightly that stopped succeeding)",
            labels=["source"])
        with self.sessions() as session:
            for state, count in queries.scans_by_state(session):
                scans_by_state.add_metric([state], count)
            for source, finished in queries.last_finished_by_source(session):
                last_success.add_metric([source], finished.timestamp())
            for scan_id in queries.unfinished_and_recent_scan_ids(session, RECENT_FINISHED):
                progress = read_progress(session, scan_id)
                labels = [str(scan_id), progress.source]
                for state, count in (("queued", progress.queued), ("done", progress.done),
                                     ("error", progress.errors), ("given-up", progress.given_up)):
                    items.add_metric(labels + [state], count)
                listed.add_metric(labels, progress.listed)
                skipped.add_metric(labels, progress.skipped)
                rate.add_metric(labels, progress.images_per_second or 0.0)
        return [scans_by_state, items, listed, skipped, rate, last_success]


def serve(settings: Settings, port: int, address: str) -> Any:
    """Start the HTTP endpoint in a background thread; returns the server (``shutdown()`` stops it)."""
    from prometheus_client import CollectorRegistry, start_http_server

    from fakescan.db.database import Database

    # no schema check: the endpoint starts (and reports fakescan_database_up 0) while the database is down
    database = Database.connect(settings, check_schema=False)
    registry = CollectorRegistry()
    registry.register(ScanCollector(settings, database.sessions))
    server, _thread = start_http_server(port, addr=address, registry=registry)
    return server


def run_forever(settings: Settings, port: int, address: str) -> int:
    serve(settings, port, address)
    log.info("exporter serving http://%s:%d/metrics", address, port)
    while True:
        time.sleep(3600)
