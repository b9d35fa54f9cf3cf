"""Fetch the next batch while this one is scored: one batch ahead, bytes only, nothing written.

Within a batch, fetch, decode and inference already overlap (``worker.stream``); between batches
the tail of one (its last chunks' inference, then its write) used to leave the fetch threads idle
and the head of the next (its first fetches) left the model idle. :class:`ReadAhead` closes that
gap for a runner that knows which batch comes next (the embedded dispatcher, ``worker.inprocess``):

- **when**: the next batch's fetches start once every object of the current batch is decoded, so
  its bytes arrive while the current batch's last chunks are scored and written, and never pile
  up on the current batch's undecoded bytes;
- **bounded**: one batch ahead at most (starting another discards the one not taken), and only
  bytes: decoding waits for the batch's own turn, so the pixel budget bounds decoded pixels as
  before and nothing ahead can hold budget a running batch waits for;
- **nothing lost, nothing duplicated**: fetching writes nothing. A batch taken from here reloads
  its objects from the database as any batch does and uses a prefetched fetch only for the same
  object row read the same way; anything else is fetched again. A killed worker loses the bytes
  it read ahead, nothing else;
- **failures stay with their batch**: bad input in a prefetched object is that object's row, a
  fault (S3 down) raises when *its* batch reads it, and a database error while looking the next
  batch up only means it is not read ahead.

Celery workers do not read ahead (yet): see docs/operations.md, "Throughput and memory".
"""

from __future__ import annotations

import logging
from typing import Sequence

from sqlalchemy.orm import Session, sessionmaker

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
        self.pending = FetchedAhead(scan_id, batch, frozenset(object_ids), head, {
            item: pool.submit(fetch_one, item, self.settings, self.cache, head) for item in objects})
        log.debug("scan %s batch %s: fetching %d objects ahead", scan_id, batch, len(objects))
        return True

    def take(self, scan_id: int, batch: int, object_ids: Sequence[int]) -> FetchedAhead | None:
        """The fetches read ahead for exactly this batch, or None (and whatever was ahead is dropped)."""
        pending, self.pending = self.pending, None
        if pending is None:
            return None
        if (pending.scan_id, pending.batch, pending.object_ids) == (scan_id, batch, frozenset(object_ids)):
            return pending
        pending.discard()
        return None

    def discard(self) -> None:
        if self.pending is not None:
            self.pending.discard()
            self.pending = None
