"""Threshold choices and calibration error on hand-made scores."""

from __future__ import annotations

import numpy as np

from worker.lab.metrics import (
    classification_metrics,
    expected_calibration_error,
    threshold_for_fpr,
    threshold_for_macro_f1,
)


def test_threshold_for_fpr_allows_at_most_the_target():
    rng = np.random.default_rng(0)
    labels = [0] * 200 + [1] * 200
    scores = list(rng.uniform(0, 0.7, 200)) + list(rng.uniform(0.3, 1, 200))
    for target in (0.0, 0.01, 0.05, 0.2):
        threshold = threshold_for_fpr(labels, scores, target)
        false_positives = sum(s >= threshold for s, y in zip(scores, labels, strict=True) if y == 0)
        assert false_positives <= target * 200
        # and it is the lowest such threshold: moving down to the next real score breaks the target
        lower = max(s for s, y in zip(scores, labels, strict=True) if y == 0 and s < threshold)
        assert sum(s >= lower for s, y in zip(scores, labels, strict=True) if y == 0) > target * 200


def test_macro_f1_threshold_separates_separable_scores():
    labels = [0, 0, 0, 1, 1, 1]
    scores = [0.1, 0.2, 0.3, 0.6, 0.7, 0.8]
    threshold = threshold_for_macro_f1(labels, scores)
    assert 0.3 < threshold <= 0.6
    assert classification_metrics(labels, scores, threshold)["accuracy"] == 1.0


def test_calibration_error_is_zero_when_scores_match_frequencies():
    labels = np.array([1] * 3 + [0] * 7 + [1] * 7 + [0] * 3)
    scores = np.array([0.3] * 10 + [0.7] * 10)
    assert expected_calibration_error(labels, scores) < 1e-9
    assert expected_calibration_error(np.array([0, 1]), np.array([1.0, 0.0])) == 1.0


def test_metrics_take_fake_as_positive_and_report_the_band():
    metrics = classification_metrics([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], 0.5, low=0.3, high=0.7)
    assert metrics["precision"] == 0.5 and metrics["recall"] == 0.5
    assert metrics["confusion_matrix"]["rows_true_cols_predicted"] == [[1, 1], [1, 1]]
    assert metrics["uncertain_fraction"] == 0.5 and metrics["accuracy_when_decided"] == 1.0
