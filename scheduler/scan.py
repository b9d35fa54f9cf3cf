"""One scan: list the source in chunks, record objects, skip finished work, enqueue batches.

The listing is streamed (``Store.list`` pages through the source) and processed ``chunk_size``
objects at a time, so an archive of millions of keys never sits in memory. Each batch's
``scan_items`` rows are committed before the batch is dispatched: a fast worker must find them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Iterator, Protocol, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from fakescan.catalog import DetectorRef
from fakescan.db import scans
from fakescan.db.objects import record_listed
from fakescan.queue import sending_ahead
from fakescan.storage import ListFilter, LocalStore, ObjectInfo, S3Store, Store, chunked
from scheduler.options import filter_as_json
from scheduler.retry import with_db_retries
from scheduler.skip import objects_to_scan

log = logging.getLogger("fakescan.scheduler")
T = TypeVar("T")
CHUNK_SIZE = 500


class Dispatch(Protocol):
    def __call__(self, scan_id: int, batch: int, object_ids: list[int]) -> None: ...


@dataclass(frozen=True)
class ScanRequest:
    source: str  # canonical: s3://bucket/prefix or file:///abs/folder
    detectors: list[DetectorRef]
    filters: ListFilter = ListFilter()
    batch_size: int = 32
    rescan: bool = False
    retry_errors: bool = False
    chunk_size: int = CHUNK_SIZE

    @property
    def detector_keys(self) -> list[tuple[str, str]]:
        return [(ref.name, ref.version) for ref in self.detectors]

    def options(self, mode: str) -> dict[str, object]:
        return {"filters": filter_as_json(self.filters), "batch_size": self.batch_size, "rescan": self.rescan,
                "retry_errors": self.retry_errors, "mode": mode}


@dataclass
class ScanCounts:
    listed: int = 0
    enqueued: int = 0
    skipped: int = 0
    batches: int = 0


def canonical_source(store: Store) -> str:
    """What identifies a source across runs (``nightly``'s cut-off). An S3 prefix keeps its trailing
    slash: listing ``p`` also admits ``p2/...``, so ``s3://b/p`` and ``s3://b/p/`` are different sources."""
    if isinstance(store, S3Store):
        return f"s3://{store.bucket}/{store.prefix}" if store.prefix else f"s3://{store.bucket}"
    if isinstance(store, LocalStore):
        return store.folder.as_uri()
    return store.root


def create_scan(sessions: sessionmaker[Session], request: ScanRequest, mode: str) -> int:
    with sessions() as session:
        scan_id = scans.create_scan(session, request.source, [ref.as_json() for ref in request.detectors],
                                    request.options(mode))
        session.commit()
    return scan_id


def run_scan(
    sessions: sessionmaker[Session],
    scan_id: int,
    store: Store,
    request: ScanRequest,
    dispatch: Dispatch,
    on_progress: Callable[[ScanCounts], None] | None = None,
) -> ScanCounts:
    """Enumerate and enqueue; a failure (or Ctrl-C) marks the scan failed and propagates."""
    with sessions() as session:
        try:
            with sending_ahead(dispatch) as send:
                return _ScanRun(session, scan_id, request, send, on_progress).run(store)
        except BaseException as error:
            _record_failure(session, scan_id, error)
            raise


def _record_failure(session: Session, scan_id: int, error: BaseException) -> None:
    reason = "interrupted" if isinstance(error, KeyboardInterrupt) else f"{type(error).__name__}: {error}"
    try:
        session.rollback()
        scans.mark_failed(session, scan_id, reason[:2000])
        session.commit()
    except Exception:  # the database may be the thing that failed; the original error matters more
        log.warning("could not mark scan %d failed", scan_id, exc_info=True)


@dataclass
class _ScanRun:
    session: Session
    scan_id: int
    request: ScanRequest
    dispatch: Dispatch
    on_progress: Callable[[ScanCounts], None] | None
    counts: ScanCounts = field(default_factory=ScanCounts)

    def run(self, store: Store) -> ScanCounts:
        self._retrying(self._start)
        pending: list[int] = []
        # the next page of the listing (stat + sha256 of local files, or an S3 page) is read while
        # this chunk's rows are written
        for chunk in read_ahead(chunked(store.list(self.request.filters), self.request.chunk_size)):
            batches, pending = self._retrying(partial(self._record_chunk, chunk, pending))
            self._dispatch(batches)
        if pending:
            self._dispatch(self._retrying(partial(self._commit_batches, [pending], listed=0, skipped=0)))
        self._retrying(self._finish_listing)
        self._report()
        return self.counts

    def _retrying(self, step: Callable[[], T]) -> T:
        return with_db_retries(self.session, step)

    def _start(self) -> None:
        scans.start_listing(self.session, self.scan_id)
        self.session.commit()

    def _record_chunk(self, chunk: list[ObjectInfo], pending: list[int]) -> tuple[list[list[int]], list[int]]:
        """One transaction: the chunk's objects, the skip check, the items of every batch it fills
        and the scan's totals; returns those batches and the ids left waiting for the next chunk."""
        keys = self.request.detector_keys
        ids, prior = record_listed(self.session, chunk, [] if self.request.rescan else keys)
        listed = {ids[info.uri]: info.fingerprint for info in chunk}
        todo = objects_to_scan(listed, prior, keys, rescan=self.request.rescan,
                               retry_errors=self.request.retry_errors)
        waiting = pending + todo
        full = len(waiting) - len(waiting) % self.request.batch_size
        batches = [waiting[start:start + self.request.batch_size]
                   for start in range(0, full, self.request.batch_size)]
        self._commit_batches(batches, listed=len(chunk), skipped=len(listed) - len(todo))
        return batches, waiting[full:]

    def _commit_batches(self, batches: list[list[int]], *, listed: int, skipped: int) -> list[list[int]]:
        """Commit the items of ``batches`` and the totals (``listed`` and ``skipped`` more objects).

        One commit per chunk, not per batch: a batch is dispatched only after its items are
        committed either way, so a worker always finds them. Totals are absolute, so a retried
        chunk cannot count twice."""
        listed_total, skipped_total = self.counts.listed + listed, self.counts.skipped + skipped
        scans.enqueue_batches(self.session, self.scan_id, self.counts.batches + 1, batches, listed=listed_total,
                              enqueued=self.counts.enqueued + sum(map(len, batches)), skipped=skipped_total)
        self.session.commit()
        self.counts.listed, self.counts.skipped = listed_total, skipped_total
        return batches

    def _dispatch(self, batches: list[list[int]]) -> None:
        first = self.counts.batches + 1
        expect = getattr(self.dispatch, "expect", None)  # a dispatcher that runs batches itself reads ahead
        for number, object_ids in enumerate(batches, start=first):
            self.counts.batches = number
            self.counts.enqueued += len(object_ids)
            if expect is not None and number - first + 1 < len(batches):
                expect(self.scan_id, number + 1, batches[number - first + 1])
            self.dispatch(self.scan_id, number, object_ids)
        self._report()

    def _finish_listing(self) -> None:
        scans.finish_listing(self.session, self.scan_id)
        self.session.commit()
        scans.finish_if_complete(self.session, self.scan_id)  # nothing enqueued, or workers were faster
        self.session.commit()

    def _report(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.counts)


def read_ahead(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """``items``, produced by a background thread up to ``depth`` ahead of the consumer.

    Errors of the producer are raised in the consumer, where the listing's own would have been."""
    import queue
    import threading

    slots: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        slots.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put(("end", None))
        except BaseException as error:  # handed to the consumer, which raises it
            slots.put(("error", error))
        finally:
            close = getattr(items, "close", None)
            if close is not None:  # a generator (a paged listing) stopped early: let it clean up now
                close()

    producer = threading.Thread(target=produce, name="listing", daemon=True)
    producer.start()
    try:
        while True:
            kind, value = slots.get()
            if kind == "end":
                return
            if kind == "error":
                raise value  # type: ignore[misc]
            yield value  # type: ignore[misc]
    finally:
        stop.set()
