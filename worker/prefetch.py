"""Fetch the next batch while this one is scored: one batch ahead, bytes only, nothing written.

Within a batch, fetch, decode and inference already overlap (``worker.stream``); between batches
the tail of one (its last chunks' inference, then its write) used to leave the fetch threads idle
and the head of the next (its first fetches) left the model idle. :class:`ReadAhead` closes that
gap for a runner that knows which batch comes next: the embedded dispatcher (``worker.inprocess``),
and a Celery worker on the threads pool with one thread (``worker.tasks``), which holds one batch
beyond the one it runs (prefetch multiplier 2) and finds it in its reserved requests
(:func:`reserved_batch`):

- **when**: the next batch's fetches start once every object of the current batch is decoded, so
  its bytes arrive while the current batch's last chunks are scored and written, and never pile
  up on the current batch's undecoded bytes (the fetch window of ``worker.fetch`` bounds those).
  Starting once the current batch's objects were all fetched overlapped more, but measured no
  faster within the noise on a CPU-bound machine (docs/results/2026-12-01-read-ahead.md) and, since
  the fetch window starts a batch's last fetches just before they are decoded, would now start
  only a few objects earlier;
- **bounded**: one batch ahead at most (starting another discards the one not taken), and only
  bytes: decoding waits for the batch's own turn, so the pixel budget bounds decoded
  pixels as before and nothing ahead can hold budget a running batch waits for;
- **nothing lost, nothing duplicated**: fetching writes nothing. A batch taken from here reloads
  its objects from the database as any batch does and uses a prefetched fetch only for the same
  object row read the same way; anything else is fetched again. A killed worker loses the bytes
  it read ahead, nothing else;
- **failures stay with their batch**: bad input in a prefetched object is that object's row, a
  fault (S3 down) raises when *its* batch reads it, and a database error while looking the next
  batch up only means it is not read ahead.

On a Celery worker the batch read ahead is a message the worker has received and not acknowledged
(late ack), exactly as the running one: a worker killed then strands both until the visibility
timeout, and the reconciler sees both as held (docs/operations.md, "Read-ahead on Celery workers").
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Sequence

from sqlalchemy.orm import Session, sessionmaker

from fakescan.queue import SCAN_BATCH_TASK
from fakescan.settings import Settings
from worker.cache import ProcessCache
from worker.fetch import FetchedAhead, fetch_one
from worker.pipeline import fetch_head, load_batch

log = logging.getLogger(__name__)


class ReadAhead:
    """At most one batch fetched ahead of the running one, in one worker process."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session], cache: ProcessCache) -> None:
        self.settings = settings
        self.sessions = sessions
        self.cache = cache
        self.pending: FetchedAhead | None = None
        self._lock = threading.Lock()  # the slot is swapped whole, whichever thread starts or takes

    def start(self, scan_id: int, batch: int, object_ids: Sequence[int]) -> bool:
        """Start fetching ``batch``'s objects; False when it is not read ahead (see module doc). Never raises."""
        self.discard()
        try:
            refs, objects = load_batch(self.sessions, scan_id, object_ids)
        except Exception as error:  # the batch looks itself up when it runs, and meets the fault there
            log.warning("scan %s batch %s: not read ahead: %s: %s", scan_id, batch, type(error).__name__, error)
            return False
        loaded = set(self.cache.loaded())
        if not objects or any((ref.name, ref.version) not in loaded for ref in refs):
            return False  # a new scan's first batch: its detectors load when it runs, not in another's
        head = fetch_head([self.cache.detector(ref) for ref in refs])
        pool = self.cache.fetch_pool()
        started = FetchedAhead(scan_id, batch, frozenset(object_ids), head, {
            item: pool.submit(fetch_one, item, self.settings, self.cache, head) for item in objects})
        with self._lock:
            replaced, self.pending = self.pending, started
        if replaced is not None:
            replaced.discard()
        log.info("scan %s batch %s: fetching %d objects ahead", scan_id, batch, len(objects))
        return True

    def take(self, scan_id: int, batch: int, object_ids: Sequence[int]) -> FetchedAhead | None:
        """The fetches read ahead for exactly this batch, or None (and whatever was ahead is dropped)."""
        with self._lock:
            pending, self.pending = self.pending, None
        if pending is None:
            return None
        if (pending.scan_id, pending.batch, pending.object_ids) == (scan_id, batch, frozenset(object_ids)):
            return pending
        pending.discard()
        return None

    def discard(self) -> None:
        with self._lock:
            pending, self.pending = self.pending, None
        if pending is not None:
            pending.discard()


def reserved_batch(running: tuple[int, int]) -> tuple[int, int, list[int]] | None:
    """``(scan_id, batch, object_ids)`` of a ``scan_batch`` this Celery worker process has received
    and not started (its reserved requests, other than ``running``), or None.

    Only a pool that runs tasks in the consumer's process sees them (threads; a prefork parent
    keeps them out of its children's reach). With several waiting, the lowest (scan, batch) is
    taken: the order a scan sends them in. A guess that turns out wrong costs only the fetches."""
    from celery.worker import state

    for _ in range(3):  # the consumer thread may add a request while this one copies the set
        try:
            waiting = [request for request in list(state.reserved_requests)
                       if request.name == SCAN_BATCH_TASK and request not in state.active_requests]
            break
        except RuntimeError:
            continue
    else:
        return None
    batches = [found for found in map(_batch_of_request, waiting) if found is not None and found[:2] != running]
    return min(batches, key=lambda found: found[:2]) if batches else None


def _batch_of_request(request: Any) -> tuple[int, int, list[int]] | None:
    """The batch a request carries, as ``fakescan.queue.CeleryDispatcher`` sends it; None for another shape."""
    try:
        scan_id, object_ids = request.args[:2]
        return int(scan_id), int(request.kwargs.get("batch", 0)), [int(item) for item in object_ids]
    except (TypeError, ValueError, AttributeError):
        return None
