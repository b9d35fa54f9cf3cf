"""Benchmark: how much of the real/fake signal the one-class ensemble's features carry, and how much
one-class modelling recovers of it.

Not a test. For every shared feature of the ensemble (and all of them together) it reports two
ROC AUCs on a labelled sample:

- ``one-class``: a Ledoit-Wolf Mahalanobis distance fitted on real images only (the ensemble's
  situation: it never sees a fake);
- ``supervised probe``: a logistic regression with access to the labels, 5-fold cross-validated
  on the labelled sample itself. A diagnostic ceiling, not a detector: it says whether the
  features separate the classes at all.

A wide gap means the features carry the signal but fakes sit inside the spread of real images,
along directions only labels reveal.

    .venv/bin/python -m tests.benchmarks.bench_feature_probe REAL_DATA LABELLED_DATA \
        [--class-dir REAL] [--fit-limit 6000] [--limit 4000] [--seed 0] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from fakescan.settings import load_settings

SIZE = 32
FEATURES = ("patches", "residual_stats", "texture", "fft_multiscale", "edges_multiscale", "colour")


def probe(fit: np.ndarray, test: np.ndarray, labels: np.ndarray, seed: int) -> dict[str, float]:
    from sklearn.covariance import LedoitWolf
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(fit)
    one_class = LedoitWolf().fit(scaler.transform(fit)).mahalanobis(scaler.transform(test))
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    supervised = cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)), test, labels,
                                   cv=folds, method="decision_function")
    return {"dimensions": fit.shape[1], "one_class_auc": round(float(roc_auc_score(labels, one_class)), 4),
            "supervised_probe_auc": round(float(roc_auc_score(labels, supervised)), 4)}


def measure(real: str, data: str, class_dir: str | None, fit_limit: int, limit: int, seed: int) -> dict[str, Any]:
    import worker.detectors.ensemble  # noqa: F401  (registers the features)
    from worker.detectors.ensemble.features import FeatureBank
    from worker.lab.data import open_labelled, open_real
    from worker.lab.images import load_array

    settings = load_settings()
    fit_images, _, _ = load_array(open_real(real, settings, class_dir).limited(fit_limit, seed), SIZE, progress=False)
    test_images, labels, _ = load_array(open_labelled(data, settings).limited(limit, seed), SIZE, progress=False)
    fit_bank, test_bank = FeatureBank(fit_images), FeatureBank(test_images)
    rows = {name: probe(fit_bank.get(name), test_bank.get(name), labels, seed) for name in FEATURES}
    rows["all"] = probe(fit_bank.stack(FEATURES), test_bank.stack(FEATURES), labels, seed)
    return {"real": real, "data": data, "n_fit": len(fit_images), "n_real": int((labels == 0).sum()),
            "n_fake": int((labels == 1).sum()), "features": rows}


def print_table(result: dict[str, Any]) -> None:
    print(f"fitted on {result['n_fit']} real images of {result['real']}; "
          f"{result['n_real']} real + {result['n_fake']} fake of {result['data']}")
    print(f"{'feature':<18}{'dims':>6}{'one-class':>11}{'supervised':>12}")
    for name, row in result["features"].items():
        print(f"{name:<18}{row['dimensions']:>6}{row['one_class_auc']:>11.4f}{row['supervised_probe_auc']:>12.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("real", help="real images to fit on (folder, .zip, s3://)")
    parser.add_argument("data", help="labelled set with real/ and fake/ folders (folder, .zip, s3://)")
    parser.add_argument("--class-dir", help="keep only this folder of REAL_DATA (e.g. REAL)")
    parser.add_argument("--fit-limit", type=int, default=6000, help="real images to fit on (default 6000)")
    parser.add_argument("--limit", type=int, default=4000, help="labelled images in all, balanced (default 4000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of both random samples and of the folds")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    result = measure(args.real, args.data, args.class_dir, args.fit_limit, args.limit, args.seed)
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
