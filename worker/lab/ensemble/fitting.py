"""Fitting the ensemble: split, fit each member on real images, calibrate on held-out real images.

The images are split three ways: the members learn from the first part; each member's score
scale is the empirical distribution of its raw scores on the second; the vote threshold is the
chosen percentile of the ensemble vote on the third, which neither the members nor the scales
have seen, so the false-positive rate on new real images stays near ``100 - percentile`` percent.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fakescan.errors import DataError, UsageError
from worker.detectors.base import Preprocessing, Thresholds
from worker.detectors.ensemble.calibration import VOTES, ScoreScale, vote_threshold, weighted_vote
from worker.detectors.ensemble.detector import OneClassEnsemble
from worker.detectors.ensemble.features import FeatureBank
from worker.detectors.ensemble.members import FitContext, Member, member_class

MIN_IMAGES = 40


@dataclass(frozen=True)
class FitOptions:
    members: list[str]
    weights: dict[str, float]
    holdout: float = 0.2
    percentile: float = 95.0
    size: int = 32
    seed: int = 0
    vote: str = "stouffer"  # a key of calibration.VOTES
    device: str = "cpu"
    progress: bool = True
    name: str = "one-class-ensemble"
    member_config: dict[str, dict[str, Any]] = field(default_factory=dict)  # e.g. {"deep-svdd": {"epochs": 3}}


@dataclass
class FitReport:
    member_seconds: dict[str, float] = field(default_factory=dict)
    n_fit: int = 0
    n_scale: int = 0
    n_threshold: int = 0


def check_options(options: FitOptions) -> None:
    """Refuse bad options before any image is read."""
    if not 0.05 <= options.holdout <= 0.8:
        raise UsageError(f"--holdout {options.holdout} is outside 0.05..0.8")
    if not 50 <= options.percentile < 100:
        raise UsageError(f"--percentile {options.percentile} is outside 50..100")
    if options.vote not in VOTES:
        raise UsageError(f"--vote {options.vote!r}: use one of {', '.join(VOTES)}")
    if options.size < 32 or options.size % 16:
        raise UsageError(f"--size {options.size}: use a multiple of 16, at least 32")


def split(n: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit / scale / threshold indices; the held-out share is halved between scale and threshold."""
    order = np.random.default_rng(seed).permutation(n)
    held = max(int(round(n * holdout)), 2)
    return np.sort(order[held:]), np.sort(order[: held // 2]), np.sort(order[held // 2: held])


def fit_ensemble(images: np.ndarray, options: FitOptions,
                 tuning: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[OneClassEnsemble, FitReport]:
    """Fit every chosen member on real images (uint8, n x size x size x 3) and calibrate the vote.

    With ``tuning`` (labelled validation images and their labels, 1 = fake) the vote's weights are
    chosen on it (see :mod:`.tuning`) instead of taken from the options."""
    from tqdm import tqdm

    check_options(options)
    if len(images) < MIN_IMAGES:
        raise DataError(f"{len(images)} images are too few to fit and calibrate an ensemble (need {MIN_IMAGES})")
    fit_rows, scale_rows, threshold_rows = split(len(images), options.holdout, options.seed)
    bank = FeatureBank(images)
    fit_bank, scale_bank, threshold_bank = (bank.subset(rows) for rows in (fit_rows, scale_rows, threshold_rows))
    context = FitContext(options.seed, options.device, options.progress)
    report = FitReport(n_fit=len(fit_rows), n_scale=len(scale_rows), n_threshold=len(threshold_rows))
    members: dict[str, Member] = {}
    scales: dict[str, ScoreScale] = {}
    for name in tqdm(options.members, desc="members", disable=not options.progress):
        started = time.perf_counter()
        member = member_class(name)(options.member_config.get(name))
        member.fit(fit_bank, context)
        scales[name] = ScoreScale.fit(member.score(scale_bank))
        members[name] = member
        report.member_seconds[name] = round(time.perf_counter() - started, 2)
    weights, tuned = options.weights, None
    if tuning is not None:
        from worker.lab.ensemble.tuning import tune_weights

        validation = FeatureBank(tuning[0])
        weights, tuned = tune_weights({name: scales[name](member.score(validation))
                                       for name, member in members.items()}, tuning[1], options.vote)
    parts = {name: scales[name](member.score(threshold_bank)) for name, member in members.items()}
    threshold = vote_threshold(weighted_vote(parts, weights, options.vote), options.percentile)
    manifest = build_manifest(options, members, scales, weights, threshold)
    if tuned is not None:
        manifest["ensemble"]["tuning"] = tuned
    return OneClassEnsemble(options.name, "unsaved", manifest, members), report


def build_manifest(options: FitOptions, members: dict[str, Member], scales: dict[str, ScoreScale],
                   weights: dict[str, float], threshold: float) -> dict[str, Any]:
    entries = [{"name": name, "summary": member.summary, "features": list(member.config["features"]),
                "weight": weights[name], "config": member.config, "scale": scales[name].as_json()}
               for name, member in members.items()]
    return {
        "name": options.name,
        "family": "one-class-ensemble",
        "version": "unsaved",
        "preprocessing": Preprocessing((options.size, options.size), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)).as_json(),
        # the vote is mapped so that its fitted threshold is 0.5 (see calibration.to_detector_score)
        "thresholds": Thresholds(0.5).as_json(),
        "ensemble": {"size": options.size, "members": entries, "percentile": options.percentile,
                     "vote_threshold": threshold, "vote": options.vote},
    }


def peak_memory_mb() -> float:
    """This process's peak resident set size (Linux reports ru_maxrss in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
