"""What a worker process builds once and reuses for every batch: detectors, store clients, fetch threads.

Models are built lazily, on the first batch that needs them, inside the process that runs the
batch. A prefork pool therefore loads them in each child after the fork (CUDA contexts and
open sockets do not survive a fork), and a parent never holds a model it would copy. The cache
remembers the pid that built it: if it is ever inherited across a fork it starts over empty.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from fakescan.catalog import MANIFEST, DetectorRef, local_folder, read_manifest
from fakescan.errors import DetectorError
from fakescan.settings import Settings, available_cpus
from fakescan.storage import Store, open_store
from worker.detectors import Detector, InputNeed, load_detector
from worker.metrics import observe_model_load
from worker.stream import PixelBudget

log = logging.getLogger(__name__)


class ProcessCache:
    """Detectors keyed by (name, version), stores keyed by root, the fetch and decode threads and the
    pixel budget, for one process.

    The pools live as long as the process: starting a dozen threads for every batch costs more
    than a metadata-only detector spends on the whole batch. The pixel budget is per process, so
    the threads pool's concurrent batches share it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pid = os.getpid()
        self._detectors: dict[tuple[str, str], Detector] = {}
        self._stores: dict[str, Store] = {}
        self._fetch_pool: ThreadPoolExecutor | None = None
        self._decode_pool: ThreadPoolExecutor | None = None
        self._budget = PixelBudget(settings.pixel_budget)
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

    def decode_pool(self) -> ThreadPoolExecutor:
        """Decode + prepare threads (Pillow and numpy release the GIL while they work)."""
        self._forget_if_forked()
        with self._lock:
            if self._decode_pool is None:
                self._decode_pool = ThreadPoolExecutor(self.settings.resolved_decode_threads(),
                                                       thread_name_prefix="decode")
            return self._decode_pool

    def pixel_budget(self) -> PixelBudget:
        return self._budget

    def close(self) -> None:
        with self._lock:
            pools = [self._fetch_pool, self._decode_pool]
            self._fetch_pool = self._decode_pool = None
        for pool in pools:
            if pool is not None:
                pool.shutdown(wait=True)

    def loaded(self) -> list[tuple[str, str]]:
        return sorted(self._detectors)

    def _forget_if_forked(self) -> None:
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            self._lock = threading.Lock()
            self._detectors, self._stores = {}, {}
            self._fetch_pool = self._decode_pool = None  # their threads stayed behind in the parent
            self._budget = PixelBudget(self.settings.pixel_budget)


SMALL_INPUT_SIDE = 128  # below this a network has too little work per layer to split across threads


def set_inference_threads(settings: Settings, need: InputNeed) -> int:
    """torch's intra-op threads for a batch whose largest input need is ``need``; returns them.

    ``FAKESCAN_INFERENCE_THREADS`` when set; else every CPU for networks of 128 px and more (the
    model is the bill, and the decode threads mostly wait on it), one thread for smaller inputs:
    a 32 px CNN spends more on synchronising threads than computing, and splitting it makes the
    decode threads that are the bill of such a scan wait for cores (measured in bench_scan).
    Only when torch is loaded: a provenance-only worker never imports it."""
    torch = sys.modules.get("torch")
    if torch is None:
        return 0
    wanted = settings.inference_threads or (
        1 if need.kind == "size" and need.side < SMALL_INPUT_SIDE else available_cpus())
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)
    return wanted


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
