"""Choosing the vote's weights on a labelled validation set (``fit-ensemble --tune-weights``).

The members never see a fake; this step does, once, for model selection only. Each fitted member
scores the validation images; every candidate weighting below is tried with the ensemble's vote,
and the one with the highest validation ROC AUC is kept (ties go to the earlier candidate, so
the simpler one). The candidates are few and fixed, so a few hundred labelled images suffice:
every member equal, weights growing with each member's own validation AUC, and the k strongest
members alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fakescan.errors import DataError
from worker.detectors.ensemble.calibration import weighted_vote

POWERS = (1, 2, 3)


def candidate_weightings(member_auc: dict[str, float]) -> dict[str, dict[str, float]]:
    """Named weightings over the members, from the members' validation AUCs."""
    lift = {name: max(auc - 0.5, 0.0) for name, auc in member_auc.items()}
    candidates = {"equal": {name: 1.0 for name in member_auc}}
    if max(lift.values()) > 0:
        for power in POWERS:
            top = max(lift.values()) ** power
            candidates[f"(auc-0.5)^{power}"] = {name: round(value ** power / top, 4) for name, value in lift.items()}
    ranked = sorted(member_auc, key=lambda name: -member_auc[name])
    for k in range(1, len(ranked)):
        candidates[f"top-{k}"] = {name: float(name in ranked[:k]) for name in member_auc}
    return candidates


def tune_weights(parts: dict[str, np.ndarray], labels: np.ndarray,
                 vote: str) -> tuple[dict[str, float], dict[str, Any]]:
    """The best weighting of the members' normalised validation scores, and a record of the choice."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        raise DataError("--tune-weights needs real and fake images in its labelled set")
    member_auc = {name: float(roc_auc_score(labels, values)) for name, values in parts.items()}
    results = {}
    for name, weights in candidate_weightings(member_auc).items():
        results[name] = (float(roc_auc_score(labels, weighted_vote(parts, weights, vote))), weights)
    best = max(results, key=lambda name: results[name][0])  # max keeps the first of equal values
    record = {"member_auc": {name: round(auc, 4) for name, auc in member_auc.items()},
              "candidate_auc": {name: round(auc, 4) for name, (auc, _) in results.items()},
              "chosen": best, "n_real": int((labels == 0).sum()), "n_fake": int((labels == 1).sum())}
    return results[best][1], record
