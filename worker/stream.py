"""Overlap the stages of a batch: fetch ahead, decode in a pool, infer chunk by chunk, hold little.

Every object of a batch is fetched at once (the fetch threads), decoded and prepared in the
decode pool as soon as its bytes arrive, and handed to inference in chunks as it is ready,
through a bounded window: inference of one chunk runs while the next chunk decodes, and at most
``2 × chunk`` decoded objects wait. The compressed bytes are bounded too: fetches start
``FAKESCAN_FETCH_CONCURRENCY`` objects ahead of the decoding (``worker.fetch.FetchWindow``) and an
object's bytes are dropped as soon as it is decoded. Decoding produces each pixel detector's input at once
(``Detector.prepare``), so the decoded image is released in the decode thread; only a
detector whose input *is* the image (full resolution) keeps it until its chunk is scored.

The worker's :class:`PixelBudget` bounds the decoded pixels in flight in the whole process (every
batch and thread): a decode waits while the budget is used, and one image larger than the
budget still decodes when nothing else is in flight.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Generator, Iterator, Sequence

from fakescan.decode import DecodeError, finish_decode, open_image
from worker.detectors import Detector, InputNeed
from worker.fetch import FetchedObject, FetchWindow

log = logging.getLogger(__name__)
BUDGET_POLL_SECONDS = 0.05
SMALL_NETWORK_SIDE = 128
SMALL_NETWORK_HEADROOM = 4


def decode_side(need: InputNeed) -> int | None:
    """The smallest side the decoder may scale to for ``need`` (None: full resolution).

    A network under 128 px gets 4x its side: decoded at exactly 32 px, DCT scaling and box
    reduction leave too little for the final resize to filter, and the bundled 32 px CNN's
    scores moved by up to 0.25 (4 of 96 real photos changed verdict); at 4x by at most 0.03
    (bench_scan's score-change rows). Larger networks decode at their side: SigLIP-base at
    224 moved by under 0.004."""
    if need.kind != "size":
        return None
    return need.side * SMALL_NETWORK_HEADROOM if need.side < SMALL_NETWORK_SIDE else need.side


class PixelBudget:
    """Decoded pixels in flight in one worker process; ``acquire`` waits while they would exceed ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self.waiting = 0
        self.peak = 0
        self._changed = threading.Condition()

    def acquire(self, pixels: int) -> int:
        """Reserve ``pixels``; alone (nothing in flight) any size is granted. Returns the reservation."""
        with self._changed:
            self.waiting += 1
            try:
                self._changed.wait_for(lambda: self.in_flight == 0 or self.in_flight + pixels <= self.limit)
            finally:
                self.waiting -= 1
            self.in_flight += pixels
            self.peak = max(self.peak, self.in_flight)
        return pixels

    def release(self, pixels: int) -> None:
        if pixels:
            with self._changed:
                self.in_flight -= pixels
                self._changed.notify_all()


class PrepareFailed:
    """A detector's ``prepare`` raised on one image: that detector's error for that object."""

    def __init__(self, error: Exception) -> None:
        self.error = error


@dataclass
class Decoded:
    """One object after fetch and decode: its inputs per pixel detector (by position), or why not."""

    fetched: FetchedObject
    inputs: list[Any] = field(default_factory=list)
    error: str | None = None  # bad input: the reason every pixel detector stores
    unexpected: BaseException | None = None  # the decoder raised something that is not bad input: a bug
    seconds: float = 0.0  # decode + prepare, without the wait for the budget
    held_pixels: int = 0  # budget kept until the chunk is scored (a detector's input is the image)


def decode_and_prepare(fetched: FetchedObject, detectors: Sequence[Detector], need: InputNeed, max_pixels: int,
                       budget: PixelBudget) -> Decoded:
    """Decode at ``need`` once, prepare every detector's input, release the image (see module doc)."""
    if fetched.error is not None or not detectors:
        return Decoded(fetched)
    started, waited = time.perf_counter(), 0.0
    held = 0
    try:
        image = open_image(fetched.data or b"", max_pixels, decode_side(need))
        before_wait = time.perf_counter()
        held = budget.acquire(image.size[0] * image.size[1])
        waited = time.perf_counter() - before_wait
        rgb = finish_decode(image)
        del image
        inputs = [_prepared(detector, rgb, fetched.object.uri) for detector in detectors]
        del rgb
    except DecodeError as error:
        budget.release(held)
        return Decoded(fetched, error=str(error), seconds=time.perf_counter() - started - waited)
    except Exception as error:  # not bad input: the pipeline fails the batch loudly
        budget.release(held)
        return Decoded(fetched, unexpected=error)
    if not any(detector.prepare_keeps_image for detector in detectors):
        budget.release(held)
        held = 0
    return Decoded(fetched, inputs, seconds=time.perf_counter() - started - waited, held_pixels=held)


def _prepared(detector: Detector, image: Any, uri: str) -> Any:
    try:
        return detector.prepare(image)
    except Exception as error:
        log.error("detector %s could not prepare %s", detector.name, uri, exc_info=True)
        return PrepareFailed(error)


def as_window(fetches: FetchWindow | Sequence[Future[FetchedObject]]) -> FetchWindow:
    """Fetches as a :class:`FetchWindow` (a list of running fetches is one with nothing left to start)."""
    return fetches if isinstance(fetches, FetchWindow) else FetchWindow(fetches, len(fetches))


def decoded_chunks(fetches: FetchWindow | Sequence[Future[FetchedObject]], detectors: Sequence[Detector],
                   need: InputNeed, max_pixels: int, decode_pool: ThreadPoolExecutor, budget: PixelBudget,
                   chunk: int, keep_bytes: bool,
                   on_decoded: Callable[[], None] | None = None) -> Generator[list[Decoded], None, None]:
    """Chunks of decoded objects in the order they finish decoding, decoding ahead of the consumer
    within a bounded window. ``fetches`` are the objects' fetches (a :class:`FetchWindow` starting
    them in the fetch threads a few ahead of the decoding, or running futures); an object's bytes
    are dropped once it is decoded (unless ``keep_bytes``: a metadata detector reads them).
    ``on_decoded`` is called once every object is decoded, before the last chunks are handed over
    (the pipeline starts fetching the next batch then: its bytes do not pile up on this batch's,
    and they arrive while this batch's last chunks are scored).

    A chunk comes early when decoding waits for pixels that finished objects hold (else it would
    wait for ever: taking objects as they finish, not in input order, means every held pixel is
    in a finished object or in one still decoding). The budget a chunk holds is released when the
    consumer asks for the next one; whatever is still in flight when the consumer stops (an
    exception) is drained and released.
    """
    window = as_window(fetches)
    del fetches  # the window forgets each fetch it hands over: nothing here may keep them either
    total = len(window)
    pending: set[Future[Decoded]] = set()
    ready: list[Decoded] = []
    decode_window = 2 * chunk

    def job(future: Future[FetchedObject]) -> Decoded:
        decoded = decode_and_prepare(future.result(), detectors, need, max_pixels, budget)
        return decoded if keep_bytes else replace(decoded, fetched=replace(decoded.fetched, data=None))

    try:
        submitted = 0
        while submitted < total or pending:
            while submitted < total and len(pending) < decode_window:
                pending.add(decode_pool.submit(job, window.take()))  # its bytes go with the job
                submitted += 1
            done, _ = wait(pending, timeout=BUDGET_POLL_SECONDS, return_when=FIRST_COMPLETED)
            pending -= done
            ready += [future.result() for future in done]
            if on_decoded is not None and submitted == total and not pending:
                on_decoded()
                on_decoded = None
            if len(ready) >= chunk:
                yield from _handed_over(ready[:chunk], ready, budget)
            elif not done and budget.waiting and any(item.held_pixels for item in ready):
                yield from _handed_over(list(ready), ready, budget)
        while ready:
            yield from _handed_over(ready[:chunk], ready, budget)
    finally:
        for future in pending:
            if not future.cancel():
                budget.release(_held(future))
        budget.release(sum(item.held_pixels for item in ready))


def _handed_over(items: list[Decoded], ready: list[Decoded], budget: PixelBudget) -> Iterator[list[Decoded]]:
    del ready[:len(items)]  # items are always the head of ready
    try:
        yield items
    finally:
        budget.release(sum(item.held_pixels for item in items))


def _held(future: Future[Decoded]) -> int:
    try:
        return future.result().held_pixels
    except Exception:  # its failure was (or will be) reported by the consumer
        return 0
