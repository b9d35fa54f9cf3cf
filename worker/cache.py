"""What a worker process builds once and reuses for every batch: detectors, store clients, fetch threads.

Models are built lazily, on the first batch that needs them, inside the process that runs the
batch. A prefork pool therefore loads them in each child after the fork (CUDA contexts and
open sockets do not survive a fork), and a parent never holds a model it would copy. The cache
remembers the pid that built it: if it is ever inherited across a fork it starts over empty.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from fakescan.catalog import MANIFEST, DetectorRef, local_folder, read_manifest
from fakescan.errors import DetectorError
from fakescan.settings import Settings
from fakescan.storage import Store, open_store
from worker.detectors import Detector, load_detector
from worker.metrics import observe_model_load

log = logging.getLogger(__name__)


class ProcessCache:
    """Detectors keyed by (name, version), stores keyed by root and the fetch threads, for one process.

    The fetch pool lives as long as the process: starting a dozen threads for every batch costs
    more than a metadata-only detector spends on the whole batch."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pid = os.getpid()
        self._detectors: dict[tuple[str, str], Detector] = {}
        self._stores: dict[str, Store] = {}
        self._fetch_pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()  # the threads pool shares one cache; build each model once

    def detector(self, ref: DetectorRef) -> Detector:
        self._forget_if_forked()
        key = (ref.name, ref.version)
        with self._lock:
            if key not in self._detectors:
                started = time.perf_counter()
                self._detectors[key] = load_detector(with_manifest(ref, self.settings), self.settings)
                seconds = time.perf_counter() - started
                observe_model_load(ref.name, seconds)
                log.info("loaded detector %s %s (%s) in %.1fs", ref.name, ref.version, ref.family, seconds)
            return self._detectors[key]

    def store(self, root: str) -> Store:
        self._forget_if_forked()
        with self._lock:
            if root not in self._stores:
                self._stores[root] = open_store(root, self.settings)
            return self._stores[root]

    def fetch_pool(self) -> ThreadPoolExecutor:
        self._forget_if_forked()
        with self._lock:
            if self._fetch_pool is None:
                self._fetch_pool = ThreadPoolExecutor(self.settings.fetch_concurrency, thread_name_prefix="fetch")
            return self._fetch_pool

    def close(self) -> None:
        with self._lock:
            pool, self._fetch_pool = self._fetch_pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def loaded(self) -> list[tuple[str, str]]:
        return sorted(self._detectors)

    def _forget_if_forked(self) -> None:
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            self._lock = threading.Lock()
            self._detectors, self._stores = {}, {}
            self._fetch_pool = None  # its threads stayed behind in the parent


def with_manifest(ref: DetectorRef, settings: Settings) -> DetectorRef:
    """A ref as stored in ``scans.detectors`` (no manifest) with its folder's manifest (thresholds ...).

    The folder must still hold the version the scan asked for: rows are labelled with that version.
    """
    folder = local_folder(ref, settings)
    if ref.manifest or folder is None or not (folder / MANIFEST).is_file():
        return ref
    manifest = read_manifest(folder)
    if str(manifest.get("version")) != ref.version:
        raise DetectorError(f"detector folder {ref.location} now holds version {manifest.get('version')}, "
                            f"the scan asked for {ref.version}: start a new scan")
    return replace(ref, manifest=manifest)
