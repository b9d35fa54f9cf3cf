"""``fakescan calibrate``: choose a detector's decision threshold and uncertain band on labelled data.

The thresholds go into the folder's ``fakescan.json``. Because verdicts change with them, the
version changes too: the weights' version plus ``-cal`` and a short hash of the thresholds (any
earlier ``-cal`` suffix replaced). Results stored under the old version stay distinguishable, and
calibrating twice to the same thresholds gives the same version, so nothing is re-scanned needlessly.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

from fakescan.catalog import MANIFEST, local_folder, read_manifest, resolve
from fakescan.errors import DataError, UsageError
from fakescan.settings import Settings
from worker.detectors.base import write_manifest
from worker.lab.data import LabelledSet
from worker.lab.evaluate import CLEAN, open_detector, score_set
from worker.lab.metrics import classification_metrics, threshold_for_fpr, threshold_for_macro_f1

_CALIBRATED = re.compile(r"-cal[0-9a-f]{6}$")


def calibrated_version(version: str, thresholds: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(thresholds, sort_keys=True).encode()).hexdigest()[:6]
    return f"{_CALIBRATED.sub('', version)}-cal{digest}"


def choose_thresholds(labels: list[int], scores: list[float], target_fpr: float | None, objective: str | None,
                      band: float) -> dict[str, Any]:
    """Threshold by target false-positive rate or by macro F1; the band is ``band`` wide around it."""
    if len(set(labels)) < 2:
        raise DataError("calibration needs both real and fake images")
    if target_fpr is not None:
        threshold = threshold_for_fpr(labels, scores, target_fpr)
    elif objective == "macro-f1":
        threshold = threshold_for_macro_f1(labels, scores)
    else:
        raise UsageError("give --target-fpr or --objective macro-f1")
    if band <= 0:
        return {"threshold": threshold, "low": None, "high": None}
    return {"threshold": threshold, "low": max(0.0, threshold - band / 2), "high": min(1.0, threshold + band / 2)}


def calibrate(spec: str, labelled: LabelledSet, settings: Settings, target_fpr: float | None,
              objective: str | None, band: float, out: Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Score the set, choose the thresholds and rewrite the manifest (in place, or in a copy at ``out``)."""
    ref = resolve(spec, settings)
    if ref.location is None:
        raise UsageError(f"calibrate needs a detector folder; {spec!r} is a weightless family")
    if ref.location.startswith("s3://") and out is None:
        raise UsageError(f"{spec!r} is on S3; give --out DIR to write a calibrated local copy")
    source = local_folder(ref, settings)
    if source is None or not (source / MANIFEST).is_file():
        raise UsageError(f"{ref.location} has no {MANIFEST} to store thresholds in")
    detector = open_detector(spec, settings)
    scored = score_set(detector, labelled, progress=progress)[CLEAN]
    thresholds = choose_thresholds(scored.labels, scored.scores, target_fpr, objective, band)
    folder = _target_folder(source, out)
    manifest = read_manifest(folder)
    previous = str(manifest.get("version", ""))
    manifest["thresholds"] = thresholds
    manifest["version"] = calibrated_version(previous, thresholds)
    manifest["calibration"] = {
        "data": labelled.source, "data_fingerprint": labelled.fingerprint(), "previous_version": previous,
        "target_fpr": target_fpr, "objective": "target-fpr" if target_fpr is not None else objective,
        "uncertain_band": band, "abstained": scored.abstained, "errors": scored.errors,
        "metrics": classification_metrics(scored.labels, scored.scores, thresholds["threshold"],
                                          thresholds["low"], thresholds["high"]),
    }
    write_manifest(manifest, folder)
    return manifest


def _target_folder(source: Path, out: Path | None) -> Path:
    if out is None or out.resolve() == source.resolve():
        return source
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"--out {out} exists and is not empty")
    shutil.copytree(source, out, dirs_exist_ok=True)
    return out
