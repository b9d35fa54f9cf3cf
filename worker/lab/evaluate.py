"""``fakescan evaluate``: any registered detector on a labelled set, clean and perturbed.

Works on whatever ``fakescan.catalog.resolve`` accepts, through the detector's own ``predict``,
so an ensemble or a Hugging Face checkpoint is measured exactly as the worker would run it.
Images that cannot be decoded, and predictions without a score (the detector abstained), are
counted and left out of the metrics; ``coverage`` is the share of judged images that got a score.
A detector that reads no pixels (provenance) is scored on the files as stored (:func:`score_files`):
decoding and re-encoding would drop the metadata it reads. Its "no evidence" (a file without
provenance metadata) is an abstention, neither real nor fake: counted in ``abstained`` and left
out of the metrics, which therefore describe the files that carried evidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from fakescan.catalog import resolve
from fakescan.decode import DecodeError
from fakescan.errors import UsageError
from fakescan.settings import Settings
from worker.detectors import Detector, Sample, load_detector
from worker.lab.data import LabelledSet
from worker.lab.metrics import classification_metrics
from worker.lab.perturb import Perturbation

CLEAN = "clean"
NO_SCORE_METRICS = ("accuracy", "precision", "recall", "f1", "macro_f1", "false_positive_rate", "roc_auc",
                    "average_precision", "ece")
CHUNK = 256


@dataclass
class Scored:
    """Labels and scores of one condition (clean or a perturbation), plus what was left out."""

    labels: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # the item of each label and score
    abstained: int = 0
    errors: int = 0


def open_detector(spec: str, settings: Settings) -> Detector:
    return load_detector(resolve(spec, settings), settings)


def score_set(detector: Detector, labelled: LabelledSet, perturbations: Sequence[Perturbation] = (),
              progress: bool = True) -> dict[str, Scored]:
    """Scores per condition; each image is read and decoded once for all conditions."""
    conditions = {CLEAN: None, **{p.label: p for p in perturbations}}
    if not detector.needs_pixels:
        return score_files(detector, labelled, perturbations, progress)
    results = {name: Scored() for name in conditions}
    items = labelled.items
    with tqdm(total=len(items), desc="scoring", unit="img", disable=not progress, mininterval=5) as bar:
        for start in range(0, len(items), CHUNK):
            chunk = items[start:start + CHUNK]
            images, labels, keys = [], [], []
            for item, data in zip(chunk, labelled.read_many(chunk), strict=True):
                try:
                    images.append(labelled.decode(data))
                    labels.append(item.label)
                    keys.append(item.key)
                except DecodeError:  # bad input is counted, not fatal; anything else is a bug
                    for scored in results.values():
                        scored.errors += 1
            for name, perturbation in conditions.items():
                shown = images if perturbation is None else [perturbation.apply(image) for image in images]
                _add(results[name], labels, keys, detector.predict(shown) if shown else [])
            bar.update(len(chunk))
    return results


def score_files(detector: Detector, labelled: LabelledSet, perturbations: Sequence[Perturbation] = (),
                progress: bool = True) -> dict[str, Scored]:
    """A detector that reads no pixels, on each file's bytes as stored: the clean condition only
    (a perturbation changes pixels, which this detector does not read)."""
    if perturbations:
        raise UsageError(f"--perturb changes pixels; {detector.name} judges the file's metadata, not its pixels")
    scored = Scored()
    items = labelled.items
    with tqdm(total=len(items), desc="scoring", unit="file", disable=not progress, mininterval=5) as bar:
        for start in range(0, len(items), CHUNK):
            chunk = items[start:start + CHUNK]
            files = [Sample(item.key, data) for item, data in zip(chunk, labelled.read_many(chunk), strict=True)]
            _add(scored, [item.label for item in chunk], [item.key for item in chunk], detector.predict_samples(files))
            bar.update(len(chunk))
    return {CLEAN: scored}


def _add(scored: Scored, labels: list[int], keys: list[str], predictions: Sequence[Any]) -> None:
    for label, key, prediction in zip(labels, keys, predictions, strict=True):
        if prediction.error is not None:
            scored.errors += 1
        elif prediction.score is None:
            scored.abstained += 1
        else:
            scored.labels.append(label)
            scored.scores.append(float(prediction.score))
            scored.keys.append(key)


def condition_metrics(detector: Detector, scored: Scored) -> dict[str, Any]:
    thresholds = detector.thresholds
    if scored.scores:
        metrics = classification_metrics(scored.labels, scored.scores, thresholds.threshold, thresholds.low,
                                         thresholds.high)
    else:  # nothing scored (provenance on files without metadata, or nothing decodable): no metric exists
        metrics = {"n": 0, "n_real": 0, "n_fake": 0, "threshold": thresholds.threshold,
                   **dict.fromkeys(NO_SCORE_METRICS)}
    judged = len(scored.scores) + scored.abstained
    return {**metrics, "abstained": scored.abstained, "errors": scored.errors,
            "coverage": len(scored.scores) / judged if judged else None}


def group_metrics(detector: Detector, scored: Scored, group_of: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Per group (a manifest column such as generator or source): recall on its fakes and false
    positives on its reals at the detector's threshold, and the ROC AUC of the group against the
    rest of the other class (its fakes against every real, its reals against every fake; within
    the group when it holds both classes)."""
    from sklearn.metrics import roc_auc_score

    labels, scores = np.array(scored.labels), np.array(scored.scores)
    groups = np.array([group_of.get(key, "(none)") for key in scored.keys])
    threshold = detector.thresholds.high if detector.thresholds.high is not None else detector.thresholds.threshold
    found = {}
    for group in sorted(set(groups.tolist())):
        mine = groups == group
        fakes, reals = scores[mine & (labels == 1)], scores[mine & (labels == 0)]
        if len(fakes) and len(reals):
            versus = mine
        else:
            versus = mine | (labels == (0 if len(fakes) else 1))
        auc = float(roc_auc_score(labels[versus], scores[versus])) if len(set(labels[versus].tolist())) == 2 else None
        found[group] = {"n_fake": int(len(fakes)), "n_real": int(len(reals)), "roc_auc": auc,
                        "recall": float((fakes >= threshold).mean()) if len(fakes) else None,
                        "false_positive_rate": float((reals >= threshold).mean()) if len(reals) else None}
    return found


def evaluation(detector: Detector, labelled: LabelledSet, results: dict[str, Scored],
               groupings: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
    """One JSON object: clean metrics at the top level, each perturbation under ``perturbations``,
    per-group figures under ``groups`` by column (item key → group) when columns were given."""
    summary = {"detector": detector.name, "family": detector.family, "version": detector.version,
               "data": labelled.source, "data_fingerprint": labelled.fingerprint(),
               **condition_metrics(detector, results[CLEAN])}
    perturbed = {name: condition_metrics(detector, scored) for name, scored in results.items() if name != CLEAN}
    if perturbed:
        summary["perturbations"] = perturbed
    if groupings:
        summary["groups"] = {column: group_metrics(detector, results[CLEAN], group_of)
                             for column, group_of in groupings.items()}
    return summary
