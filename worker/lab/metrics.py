"""Detection metrics with "fake" as the positive class, and threshold choices.

Everything takes ``labels`` (0 real, 1 fake) and ``scores`` (P(fake)); scikit-learn does the
counting. The expected calibration error compares P(fake) with the observed share of fakes in
15 equal-width score bins, weighted by how many images fall in each bin.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

ECE_BINS = 15


def classification_metrics(labels: Sequence[int], scores: Sequence[float], threshold: float = 0.5,
                           low: float | None = None, high: float | None = None) -> dict[str, Any]:
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    y, s = np.asarray(labels, dtype=int), np.asarray(scores, dtype=float)
    predicted = (s >= threshold).astype(int)
    precision, recall, f1, support = precision_recall_fscore_support(y, predicted, labels=[0, 1], zero_division=0)
    matrix = confusion_matrix(y, predicted, labels=[0, 1])
    (tn, fp), (fn, tp) = matrix.tolist()
    result: dict[str, Any] = {
        "n": int(y.size), "n_real": int((y == 0).sum()), "n_fake": int((y == 1).sum()),
        "threshold": float(threshold),
        "accuracy": float((predicted == y).mean()) if y.size else float("nan"),
        "precision": float(precision[1]), "recall": float(recall[1]), "f1": float(f1[1]),
        "macro_f1": float(f1.mean()),
        "false_positive_rate": fp / (fp + tn) if fp + tn else float("nan"),
        "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]),
                             "f1": float(f1[i]), "support": int(support[i])}
                      for i, name in enumerate(("real", "fake"))},
        "confusion_matrix": {"labels": ["real", "fake"], "rows_true_cols_predicted": matrix.tolist()},
        "ece": expected_calibration_error(y, s),
        **ranking_metrics(y, s),
    }
    if low is not None or high is not None:
        result.update(band_metrics(y, s, threshold if low is None else low, threshold if high is None else high))
    return result


def ranking_metrics(y: np.ndarray, s: np.ndarray) -> dict[str, float | None]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    if len(set(y.tolist())) < 2:
        return {"roc_auc": None, "average_precision": None}
    return {"roc_auc": float(roc_auc_score(y, s)), "average_precision": float(average_precision_score(y, s))}


def band_metrics(y: np.ndarray, s: np.ndarray, low: float, high: float) -> dict[str, Any]:
    """How the three-way verdict (real / uncertain / fake) fares."""
    fake, real = s >= high, s < low
    decided = fake | real
    correct = (fake & (y == 1)) | (real & (y == 0))
    return {"low": float(low), "high": float(high), "uncertain_fraction": float(1 - decided.mean()),
            "accuracy_when_decided": float(correct.sum() / decided.sum()) if decided.any() else None}


def expected_calibration_error(y: np.ndarray, s: np.ndarray, bins: int = ECE_BINS) -> float:
    if y.size == 0:
        return float("nan")
    index = np.minimum((s * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            total += members.sum() * abs(s[members].mean() - y[members].mean())
    return float(total / y.size)


def threshold_for_fpr(labels: Sequence[int], scores: Sequence[float], target_fpr: float) -> float:
    """The lowest threshold whose false-positive rate on these real images is at most ``target_fpr``."""
    y, s = np.asarray(labels, dtype=int), np.asarray(scores, dtype=float)
    real = np.sort(s[y == 0])[::-1]
    if real.size == 0:
        raise ValueError("no real images to measure a false-positive rate on")
    allowed = int(math.floor(target_fpr * real.size + 1e-9))
    if allowed >= real.size:
        return float(real.min())
    return float(np.nextafter(real[allowed], np.inf))  # at most `allowed` reals score at or above it


def threshold_for_macro_f1(labels: Sequence[int], scores: Sequence[float], candidates: int = 2000) -> float:
    """The threshold with the best macro F1 (ties: the one closest to 0.5)."""
    from sklearn.metrics import f1_score

    y, s = np.asarray(labels, dtype=int), np.asarray(scores, dtype=float)
    values = np.unique(s)
    if values.size > candidates:
        values = np.unique(np.quantile(s, np.linspace(0, 1, candidates)))
    best, best_score = 0.5, -1.0
    for value in values:
        score = f1_score(y, (s >= value).astype(int), average="macro", zero_division=0)
        if score > best_score + 1e-12 or (abs(score - best_score) <= 1e-12 and abs(value - 0.5) < abs(best - 0.5)):
            best, best_score = float(value), score
    return best
