"""The mapper: one batch of object ids in, one committed transaction of result rows out.

``process_batch`` loads the scan's detectors and the batch's objects, fetches the objects
concurrently, wraps each as a lazily decoded :class:`~worker.detectors.Sample`, runs every
detector batched and writes all rows in one transaction (``fakescan.db.results``).

Three kinds of failure, three behaviours:

- **bad input is data**: a missing, oversized, empty, corrupt or non-image object becomes an
  ``error`` row whose reason starts with a kind (``not-found:``, ``too-large:``, ``corrupt:`` ...);
- **infrastructure faults** (S3 5xx or unreachable, database down) propagate as
  :class:`InfrastructureFault` / SQLAlchemy ``OperationalError`` so the task retries the batch;
- **bugs fail loudly**: a detector that raises is retried one object at a time, so one input it
  chokes on costs one ``detector-failed:`` row (logged with its traceback) instead of the whole
  batch; when it raises on *every* object of a batch of two or more the detector itself is
  broken and :class:`BatchCrashed` fails the task. An unexpected exception inside the decoder
  also raises :class:`BatchCrashed`.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

from sqlalchemy import and_, select
from sqlalchemy.orm import Session, sessionmaker

from fakescan.catalog import DetectorRef
from fakescan.db.models import Scan, ScanItem, StoredObject, utcnow
from fakescan.db.results import write_batch
from fakescan.db.verdicts import record_batch_verdicts
from fakescan.settings import Settings
from worker.cache import ProcessCache
from worker.decode import DecodeError, decode_image
from worker.detectors import Detector, Prediction, Sample
from worker.fetch import FetchedObject, InfrastructureFault, fetch_all
from worker.metrics import STAGES, observe_batch

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
    stage_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    def summary(self) -> str:
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(self.error_kinds.items()))
        stages = " ".join(f"{stage} {seconds:.2f}s" for stage, seconds in self.stage_seconds.items())
        return (f"scan {self.scan_id} batch {self.batch}: {self.objects} objects, {self.ok} ok, {self.errors} error"
                + (f" ({kinds})" if kinds else "") + f", {self.skipped} skipped; {stages}")


class TimedDecoder:
    """The Sample's decoder: remembers how long decoding took and any exception that is not bad input."""

    def __init__(self, max_pixels: int) -> None:
        self.max_pixels = max_pixels
        self.seconds = 0.0
        self.unexpected: BaseException | None = None

    def __call__(self, data: bytes) -> Any:
        started = time.perf_counter()
        try:
            return decode_image(data, self.max_pixels)
        except DecodeError:
            raise
        except Exception as error:  # Sample turns every exception into an error prediction; this one is a bug
            self.unexpected = error
            raise
        finally:
            self.seconds += time.perf_counter() - started


def process_batch(settings: Settings, session_factory: SessionFactory, scan_id: int, object_ids: Sequence[int],
                  cache: ProcessCache, batch: int = 0) -> BatchReport:
    """Score one batch of a scan with every detector of the scan and commit the rows; idempotent."""
    batch_started = time.perf_counter()
    report = BatchReport(scan_id, batch, len(object_ids))
    refs, objects = load_batch(session_factory, scan_id, object_ids)
    report.skipped = len(set(object_ids)) - len(objects)
    if not objects:
        log.info("scan %s batch %s: nothing to do (%d ids not in the scan)", scan_id, batch, len(object_ids))
        return report
    log.info("scan %s batch %s: started, %d objects", scan_id, batch, len(objects))
    detectors = [cache.detector(ref) for ref in refs]  # loaded before the clock: not inference time
    started = time.perf_counter()
    fetched = fetch_all(objects, settings, cache)
    report.stage_seconds["fetch"] = time.perf_counter() - started
    rows = score(detectors, fetched, settings, report)
    started = time.perf_counter()
    with session_factory.begin() as session:
        written = write_batch(session, scan_id, rows)
        record_batch_verdicts(session, scan_id, written, settings)  # one combined verdict per object
    report.stage_seconds["write"] = time.perf_counter() - started
    written_ids = set(written)
    _count(report, rows, written_ids)
    observe_batch(time.perf_counter() - batch_started, report.objects, report.stage_seconds,
                  [row for row in rows if row["object_id"] in written_ids])
    log.info("%s", report.summary())
    return report


def load_batch(session_factory: SessionFactory, scan_id: int,
               object_ids: Sequence[int]) -> tuple[list[DetectorRef], list[BatchObject]]:
    """The scan's detectors and those of ``object_ids`` that are still items of the scan."""
    with session_factory() as session:
        scan = session.get(Scan, scan_id)
        if scan is None or not object_ids or scan.state == "cancelled":  # cancelled: its batches are skipped
            return [], []
        rows = session.execute(
            select(StoredObject.id, StoredObject.uri, StoredObject.store, StoredObject.key, StoredObject.fingerprint)
            .join(ScanItem, and_(ScanItem.object_id == StoredObject.id, ScanItem.scan_id == scan_id))
            .where(StoredObject.id.in_(sorted(set(object_ids))))
            .order_by(StoredObject.id)
        )
        objects = [BatchObject(*row) for row in rows]
        refs = [detector_ref(entry) for entry in scan.detectors]
    return refs, objects


def detector_ref(entry: dict[str, str]) -> DetectorRef:
    """A ``scans.detectors`` entry (as the scheduler resolved it) back into a DetectorRef."""
    return DetectorRef(entry["name"], entry["family"], entry["version"], entry.get("location") or None)


def score(detectors: Sequence[Detector], fetched: Sequence[FetchedObject], settings: Settings,
          report: BatchReport) -> list[dict[str, Any]]:
    """Result rows for every (object, detector) pair: fetch errors first, then each detector's predictions."""
    readable = [item for item in fetched if item.error is None]
    decoders = [TimedDecoder(settings.max_image_pixels) for _ in readable]
    samples = [Sample(item.object.uri, item.data or b"", decoder=decoder)
               for item, decoder in zip(readable, decoders, strict=True)]
    rows = [error_row(item, detector, item.error) for item in fetched if item.error is not None
            for detector in detectors]
    for detector in detectors:
        decode_before = sum(decoder.seconds for decoder in decoders)
        started = time.perf_counter()
        predictions = predict_isolated(detector, samples)
        decode_seconds = sum(decoder.seconds for decoder in decoders) - decode_before
        inference = max(0.0, time.perf_counter() - started - decode_seconds)
        _raise_if_decoder_broke(decoders)
        report.stage_seconds["decode"] += decode_seconds
        report.stage_seconds["inference"] += inference
        scored = sum(1 for p in predictions if p.error is None) or 1
        for item, decoder, prediction in zip(readable, decoders, predictions, strict=True):
            rows.append(prediction_row(item, detector, prediction, decoder.seconds, inference / scored))
    return rows


def predict_isolated(detector: Detector, samples: Sequence[Sample]) -> list[Prediction]:
    """The detector's batch predictions; when the batch raises, one object at a time (see module doc)."""
    if not samples:
        return []
    try:
        return _checked(detector, samples, detector.predict_samples(samples))
    except BatchCrashed:
        raise
    except Exception as error:
        log.warning("detector %s raised on a batch of %d (%s: %s); retrying one object at a time",
                    detector.name, len(samples), type(error).__name__, error)
    predictions, failures = [], 0
    for sample in samples:
        try:
            predictions.extend(_checked(detector, [sample], detector.predict_samples([sample])))
        except BatchCrashed:
            raise
        except Exception as error:
            failures += 1
            log.error("detector %s raised on %s", detector.name, sample.uri, exc_info=True)
            predictions.append(Prediction(None, error=f"detector-failed: {type(error).__name__}: {error}"))
    if failures == len(samples) > 1:
        raise BatchCrashed(f"detector {detector.name} {detector.version} raised on every one of {len(samples)} "
                           "objects of the batch: the detector is broken, not the input (traceback in the log)")
    return predictions


def _checked(detector: Detector, samples: Sequence[Sample], predictions: list[Prediction]) -> list[Prediction]:
    if len(predictions) != len(samples):
        raise BatchCrashed(f"detector {detector.name} returned {len(predictions)} predictions "
                           f"for {len(samples)} images")
    return predictions


def _raise_if_decoder_broke(decoders: Sequence[TimedDecoder]) -> None:
    for decoder in decoders:
        if decoder.unexpected is not None:
            error = decoder.unexpected
            raise BatchCrashed(f"decoder raised {type(error).__name__}: {error}") from error


def prediction_row(item: FetchedObject, detector: Detector, prediction: Prediction, decode_seconds: float,
                   inference_seconds: float) -> dict[str, Any]:
    timings = {"fetch_ms": _ms(item.seconds), "decode_ms": _ms(decode_seconds),
               "inference_ms": _ms(inference_seconds)}
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
