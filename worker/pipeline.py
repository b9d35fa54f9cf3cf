"""The mapper: one batch of object ids in, one committed transaction of result rows out.

``process_batch`` loads the scan's detectors and the batch's objects, fetches the objects
concurrently, decodes each once at the largest input need of the scan's detectors and prepares
every detector's input in the decode pool, scores chunk by chunk while the next chunk decodes
(:mod:`worker.stream`) and writes all rows in one transaction (``fakescan.db.results``).

Three kinds of failure, three behaviours:

- **bad input is data**: a missing, oversized, empty, corrupt or non-image object becomes an
  ``error`` row whose reason starts with a kind (``not-found:``, ``too-large:``, ``corrupt:`` ...);
- **infrastructure faults** (S3 5xx or unreachable, database down) propagate as
  :class:`InfrastructureFault` / SQLAlchemy ``OperationalError`` so the task retries the batch;
- **bugs fail loudly**: a detector that raises is retried one object at a time, so one input it
  chokes on costs one ``detector-failed:`` row (logged with its traceback) instead of the whole
  batch; when it raises on *every* object of a batch of two or more the detector itself is
  broken and :class:`BatchCrashed` fails the task (all per chunk of ``FAKESCAN_INFERENCE_CHUNK``).
  An unexpected exception inside the decoder also raises :class:`BatchCrashed`.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from sqlalchemy.orm import Session, sessionmaker

from fakescan.catalog import DetectorRef
from fakescan.db import scans
from fakescan.db.models import utcnow
from fakescan.db.results import write_batch
from fakescan.db.verdicts import record_batch_verdicts
from fakescan.settings import Settings
from worker.cache import ProcessCache, set_inference_threads
from worker.detectors import Detector, InputNeed, Prediction, Sample
from worker.fetch import FetchedAhead, FetchedObject, InfrastructureFault, fetch_all, rest_of
from worker.gpu_decode import device_decoded_chunks, uses_device_decode
from worker.memory import release_free_memory
from worker.metrics import STAGES, observe_batch
from worker.stream import Decoded, PrepareFailed, decoded_chunks

log = logging.getLogger(__name__)
SessionFactory = sessionmaker[Session]
__all__ = ["BatchCrashed", "BatchReport", "InfrastructureFault", "STAGES", "process_batch"]


class BatchCrashed(RuntimeError):
    """A defect in a detector or in fakescan: the batch fails loudly instead of writing wrong rows."""


@dataclass(frozen=True)
class BatchObject:
    id: int
    uri: str
    store: str
    key: str
    fingerprint: str


@dataclass
class BatchReport:
    """What one batch did; per-stage seconds are what the metrics observe (see STAGES)."""

    scan_id: int
    batch: int
    requested: int
    objects: int = 0  # objects of the scan that were processed and written
    skipped: int = 0  # ids not in the scan, or objects deleted meanwhile
    ok: int = 0  # result rows with status ok
    errors: int = 0  # result rows with status error
    error_kinds: Counter[str] = field(default_factory=Counter)  # "corrupt", "not-found", ...
    fetched_ahead: int = 0  # objects whose fetch was made before the batch started (worker.prefetch)
    stage_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    def summary(self) -> str:
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(self.error_kinds.items()))
        stages = " ".join(f"{stage} {seconds:.2f}s" for stage, seconds in self.stage_seconds.items())
        ahead = f", {self.fetched_ahead} fetched ahead" if self.fetched_ahead else ""
        return (f"scan {self.scan_id} batch {self.batch}: {self.objects} objects, {self.ok} ok, {self.errors} error"
                + (f" ({kinds})" if kinds else "") + f", {self.skipped} skipped{ahead}; {stages}")


def process_batch(settings: Settings, session_factory: SessionFactory, scan_id: int, object_ids: Sequence[int],
                  cache: ProcessCache, batch: int = 0, ahead: FetchedAhead | None = None,
                  read_next: Callable[[], None] | None = None) -> BatchReport:
    """Score one batch of a scan with every detector of the scan and commit the rows; idempotent.

    ``ahead``: this batch's objects as fetched before it ran (``worker.prefetch``); ``read_next``
    is called once every object of the batch is decoded: the next batch's fetches start there,
    while this one's last chunks are scored and written."""
    batch_started = time.perf_counter()
    report = BatchReport(scan_id, batch, len(object_ids))
    refs, objects = load_batch(session_factory, scan_id, object_ids)
    report.skipped = len(set(object_ids)) - len(objects)
    if not objects:
        log.info("scan %s batch %s: nothing to do (%d ids not in the scan)", scan_id, batch, len(object_ids))
        return report
    log.info("scan %s batch %s: started, %d objects", scan_id, batch, len(objects))
    detectors = [cache.detector(ref) for ref in refs]  # loaded before the clock: not inference time
    rows = score(detectors, objects, settings, cache, report, ahead, read_next)
    started = time.perf_counter()
    with session_factory.begin() as session:
        written = write_batch(session, scan_id, rows)
        record_batch_verdicts(session, scan_id, written, settings, rows)  # one combined verdict per object
    report.stage_seconds["write"] = time.perf_counter() - started
    written_ids = set(written)
    _count(report, rows, written_ids)
    observe_batch(time.perf_counter() - batch_started, report.objects, report.stage_seconds,
                  [row for row in rows if row["object_id"] in written_ids], report.fetched_ahead)
    log.info("%s", report.summary())
    return report


def load_batch(session_factory: SessionFactory, scan_id: int,
               object_ids: Sequence[int]) -> tuple[list[DetectorRef], list[BatchObject]]:
    """The scan's detectors and those of ``object_ids`` that are still items of the scan."""
    with session_factory() as session:
        detectors, rows = scans.batch_of_scan(session, scan_id, object_ids)
    return [detector_ref(entry) for entry in detectors], [BatchObject(*row) for row in rows]


def detector_ref(entry: dict[str, str]) -> DetectorRef:
    """A ``scans.detectors`` entry (as the scheduler resolved it) back into a DetectorRef."""
    return DetectorRef(entry["name"], entry["family"], entry["version"], entry.get("location") or None)


def score(detectors: Sequence[Detector], objects: Sequence[BatchObject], settings: Settings, cache: ProcessCache,
          report: BatchReport, ahead: FetchedAhead | None = None,
          read_next: Callable[[], None] | None = None) -> list[dict[str, Any]]:
    """Result rows for every (object, detector) pair, fetching, decoding and scoring overlapped (worker.stream).

    Metadata detectors (input need ``none``) read the fetched bytes; pixel detectors share one
    decode at the largest need of the scan. Stage seconds: fetch and decode are thread-seconds
    (divided by the fetch threads for fetch), inference is the time the models ran."""
    metadata = [detector for detector in detectors if detector.decode_need().kind == "none"]
    pixel = [detector for detector in detectors if detector.decode_need().kind != "none"]
    need = InputNeed.largest(detector.decode_need() for detector in pixel)
    set_inference_threads(settings, need)
    fetches = fetch_all(objects, settings, cache, fetch_head(detectors), ahead)
    report.fetched_ahead = fetches.fetched_ahead
    device = settings.resolved_device()
    chunk_size = settings.resolved_inference_chunk(device)
    if uses_device_decode(settings.gpu_decode, device, pixel):
        chunks = device_decoded_chunks(fetches, pixel, device, settings.max_image_pixels,
                                       chunk_size, keep_bytes=bool(metadata), on_decoded=read_next)
    else:
        chunks = decoded_chunks(fetches, pixel, need, settings.max_image_pixels, cache.decode_pool(),
                                cache.pixel_budget(), chunk_size, keep_bytes=bool(metadata), on_decoded=read_next)
    rows: list[dict[str, Any]] = []
    fetch_seconds = 0.0
    on_cpu = device.startswith("cpu")
    with closing(chunks):
        for chunk in chunks:
            fetch_seconds += sum(item.fetched.seconds for item in chunk)
            rows += score_chunk(metadata, pixel, chunk, settings, cache, report)
            if on_cpu and pixel:
                release_free_memory()  # the chunk's freed activations back to the kernel (worker/memory.py)
    report.stage_seconds["fetch"] = fetch_seconds / max(1, min(settings.fetch_concurrency, len(objects)))
    return rows


def fetch_head(detectors: Sequence[Detector]) -> int | None:
    """How much of each object a batch reads first: all of it (None) when a detector needs pixels."""
    if any(detector.decode_need().kind != "none" for detector in detectors):
        return None
    return head_bytes(detectors)


def head_bytes(metadata: Sequence[Detector]) -> int | None:
    """How much of each object a scan without pixel detectors reads first: the most any of them
    asks for, or everything (None) when one of them needs whole objects."""
    wanted = [detector.head_bytes for detector in metadata]
    return None if not wanted or None in wanted else max(w for w in wanted if w is not None)


def score_chunk(metadata: Sequence[Detector], pixel: Sequence[Detector], chunk: Sequence[Decoded],
                settings: Settings, cache: ProcessCache, report: BatchReport) -> list[dict[str, Any]]:
    """The rows of one chunk: fetch errors, then each metadata detector, then each pixel detector."""
    for item in chunk:
        if item.unexpected is not None:
            error = item.unexpected
            raise BatchCrashed(f"decoder raised {type(error).__name__}: {error}") from error
    readable = [item for item in chunk if item.fetched.error is None]
    rows = [error_row(item.fetched, detector, item.fetched.error) for item in chunk if item.fetched.error is not None
            for detector in [*metadata, *pixel]]
    report.stage_seconds["decode"] += sum(item.seconds for item in readable)
    for detector in metadata:
        samples = [Sample(item.fetched.object.uri, item.fetched.data or b"",
                          rest=None if item.fetched.complete else rest_of(item.fetched.object, settings, cache))
                   for item in readable]
        rows += _scored_rows(detector, readable, samples, detector.predict_samples, report)
    decoded = [item for item in readable if item.error is None]
    for item in readable:
        if item.error is not None:
            rows += [error_row(item.fetched, detector, item.error, _timings(item, 0.0)) for detector in pixel]
    for position, detector in enumerate(pixel):
        prepared = [item for item in decoded if not isinstance(item.inputs[position], PrepareFailed)]
        for item in decoded:
            if isinstance(item.inputs[position], PrepareFailed):
                error = item.inputs[position].error
                rows.append(error_row(item.fetched, detector, f"detector-failed: {type(error).__name__}: {error}",
                                      _timings(item, 0.0)))
        if len(prepared) == 0 and len(decoded) > 1:
            raise BatchCrashed(f"detector {detector.name} {detector.version} could not prepare any of {len(decoded)} "
                               "images of the chunk: the detector is broken, not the input (traceback in the log)")
        rows += _scored_rows(detector, prepared, [item.inputs[position] for item in prepared],
                             detector.predict_inputs, report)
    return rows


def _scored_rows(detector: Detector, items: Sequence[Decoded], inputs: Sequence[Any],
                 predict: Callable[[Sequence[Any]], list[Prediction]], report: BatchReport) -> list[dict[str, Any]]:
    started = time.perf_counter()
    predictions = predict_isolated(detector, inputs, predict)
    inference = time.perf_counter() - started
    report.stage_seconds["inference"] += inference
    scored = sum(1 for p in predictions if p.error is None) or 1
    return [prediction_row(item.fetched, detector, prediction, _timings(item, inference / scored))
            for item, prediction in zip(items, predictions, strict=True)]


def _timings(item: Decoded, inference_seconds: float) -> dict[str, float]:
    return {"fetch_ms": _ms(item.fetched.seconds), "decode_ms": _ms(item.seconds),
            "inference_ms": _ms(inference_seconds)}


def predict_isolated(detector: Detector, inputs: Sequence[Any],
                     predict: Callable[[Sequence[Any]], list[Prediction]] | None = None) -> list[Prediction]:
    """The detector's batch predictions; when the batch raises, one object at a time (see module doc).

    ``predict`` is ``detector.predict_samples`` (the default, for samples) or ``detector.predict_inputs``."""
    predict = predict or detector.predict_samples
    if not inputs:
        return []
    try:
        return _checked(detector, inputs, predict(inputs))
    except (BatchCrashed, InfrastructureFault):  # a fault reading the rest of an object: retry the batch
        raise
    except Exception as error:
        log.warning("detector %s raised on a batch of %d (%s: %s); retrying one object at a time",
                    detector.name, len(inputs), type(error).__name__, error)
    predictions, failures = [], 0
    for one in inputs:
        try:
            predictions.extend(_checked(detector, [one], predict([one])))
        except (BatchCrashed, InfrastructureFault):
            raise
        except Exception as error:
            failures += 1
            log.error("detector %s raised on %s", detector.name, getattr(one, "uri", "one object"), exc_info=True)
            predictions.append(Prediction(None, error=f"detector-failed: {type(error).__name__}: {error}"))
    if failures == len(inputs) > 1:
        raise BatchCrashed(f"detector {detector.name} {detector.version} raised on every one of {len(inputs)} "
                           "objects of the batch: the detector is broken, not the input (traceback in the log)")
    return predictions


def _checked(detector: Detector, inputs: Sequence[Any], predictions: list[Prediction]) -> list[Prediction]:
    if len(predictions) != len(inputs):
        raise BatchCrashed(f"detector {detector.name} returned {len(predictions)} predictions for {len(inputs)} images")
    return predictions


def prediction_row(item: FetchedObject, detector: Detector, prediction: Prediction,
                   timings: dict[str, float]) -> dict[str, Any]:
    if prediction.error is not None:
        return error_row(item, detector, prediction.error, timings)
    if prediction.score is not None and not (math.isfinite(prediction.score) and 0.0 <= prediction.score <= 1.0):
        log.error("detector %s scored %s as %r, outside [0, 1]", detector.name, item.object.uri, prediction.score)
        return error_row(item, detector, f"detector-failed: score {prediction.score!r} outside [0, 1]", timings)
    return _row(item, detector, "ok", timings, score=prediction.score, verdict=detector.verdict(prediction.score),
                parts=prediction.parts, evidence=prediction.evidence)


def error_row(item: FetchedObject, detector: Detector, reason: str,
              timings: dict[str, float] | None = None) -> dict[str, Any]:
    return _row(item, detector, "error", timings or {"fetch_ms": _ms(item.seconds)}, error=reason)


def _row(item: FetchedObject, detector: Detector, status: str, timings: dict[str, float],
         **values: Any) -> dict[str, Any]:
    row = {"object_id": item.object.id, "detector": detector.name, "detector_version": detector.version,
           "fingerprint": item.object.fingerprint, "status": status, "score": None, "verdict": None,
           "parts": None, "evidence": None, "error": None, "timings": timings, "scanned_at": utcnow()}
    row.update(values)
    return row


def _count(report: BatchReport, rows: Sequence[dict[str, Any]], written: set[int]) -> None:
    report.objects = len(written)
    report.skipped = report.requested - len(written)
    for row in rows:
        if row["object_id"] not in written:
            continue
        if row["status"] == "ok":
            report.ok += 1
        else:
            report.errors += 1
            report.error_kinds[row["error"].split(":", 1)[0]] += 1


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)
