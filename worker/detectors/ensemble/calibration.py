"""Turning the members' raw scores into one ensemble score.

Each member's raw score is mapped through the empirical CDF of its raw scores on held-out real
images, so a normalised score of 0.97 reads "more anomalous than 97% of real images" whatever
the member's units. Past the largest held-out score the map keeps rising along an exponential
tail instead of saturating, so two strong anomalies stay ordered. The members then vote (see
:data:`VOTES`); the decision threshold is a percentile of that vote on a second held-out set, and the
vote is finally bent piecewise-linearly so that this threshold sits at 0.5, like every other
fakescan detector.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

KNOTS = 101


@dataclass(frozen=True)
class ScoreScale:
    knots: tuple[float, ...]  # raw-score quantiles of held-out real images at evenly spaced probabilities
    tail: float  # raw-score distance over which the tail closes most of the remaining gap to 1
    epsilon: float  # probability mass left beyond the largest held-out score: 1 / (n + 1)

    @classmethod
    def fit(cls, raw: np.ndarray) -> "ScoreScale":
        raw = np.asarray(raw, dtype=np.float64)
        knots = np.quantile(raw, np.linspace(0, 1, KNOTS))
        spread = float(np.quantile(raw, 0.99) - np.quantile(raw, 0.5))
        tail = max(spread, float(np.std(raw)), 1e-9)
        return cls(tuple(float(k) for k in knots), tail, 1.0 / (len(raw) + 1))

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=np.float64)
        knots = np.asarray(self.knots)
        # equal knots (ties in the held-out scores) would make interp ambiguous; a tiny ramp fixes the order
        knots = np.maximum.accumulate(knots) + np.arange(len(knots)) * 1e-12 * max(self.tail, 1.0)
        inside = np.interp(raw, knots, np.linspace(0, 1, len(knots))) * (1 - self.epsilon)
        beyond = 1 - self.epsilon * np.exp(-(raw - knots[-1]) / self.tail)
        return np.where(raw > knots[-1], beyond, inside)

    def as_json(self) -> dict[str, Any]:
        return {"knots": list(self.knots), "tail": self.tail, "epsilon": self.epsilon}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ScoreScale":
        return cls(tuple(float(k) for k in data["knots"]), float(data["tail"]), float(data["epsilon"]))


def stouffer_vote(parts: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """Weighted Stouffer: each normalised score as a normal quantile, combined as ``sum(w z) / sqrt(sum(w^2))``.

    Members that lean the same way add up, so several moderately unusual members flag an image
    that no single one would; an extreme member still counts, through a large z.
    """
    from scipy.special import ndtr, ndtri

    norm = float(np.sqrt(sum(weights[name] ** 2 for name in parts)))
    z = sum(weights[name] * ndtri(np.clip(values, 1e-12, 1 - 1e-12)) for name, values in parts.items())
    return ndtr(z / norm)


def fisher_vote(parts: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """One minus the weighted geometric mean of the members' tail probabilities ``1 - s``.

    Fisher's way of combining p-values, kept in [0, 1]: one member that is very sure (s = 0.999)
    moves the vote more than several that are mildly unsure. Ensembles fitted before the
    Stouffer vote keep this one (their manifests say so).
    """
    total = sum(weights[name] for name in parts)
    log_tail = sum(weights[name] * np.log(np.clip(1 - values, 1e-12, 1)) for name, values in parts.items())
    return 1 - np.exp(log_tail / total)


# how members vote, by the name recorded in the manifest; new fits use the first
VOTES = {"stouffer": stouffer_vote, "fisher": fisher_vote}
# what manifests written before the vote was selectable say: that was Fisher's vote
LEGACY_VOTE_TEXT = {"1 - weighted geometric mean of (1 - per-member empirical-CDF score)": "fisher"}


def vote_method(recorded: str | None) -> str:
    """The vote named in a manifest's ensemble section."""
    from fakescan.errors import DetectorError

    name = LEGACY_VOTE_TEXT.get(recorded or "", recorded)
    if name not in VOTES:
        raise DetectorError(f"unknown ensemble vote {recorded!r} in the manifest; known: {', '.join(VOTES)}")
    return name


def weighted_vote(parts: dict[str, np.ndarray], weights: dict[str, float], method: str = "stouffer") -> np.ndarray:
    return VOTES[method](parts, weights)


def vote_threshold(vote: np.ndarray, percentile: float) -> float:
    return float(np.percentile(vote, percentile))


def to_detector_score(vote: np.ndarray, threshold: float) -> np.ndarray:
    """Piecewise-linear, monotone: 0 -> 0, threshold -> 0.5, 1 -> 1."""
    threshold = min(max(threshold, 1e-6), 1 - 1e-6)
    below = 0.5 * vote / threshold
    above = 0.5 + 0.5 * (vote - threshold) / (1 - threshold)
    return np.clip(np.where(vote < threshold, below, above), 0.0, 1.0)


def parse_weights(text: str | None, members: list[str]) -> dict[str, float]:
    """``name=weight,...`` over the fitted members; members not named keep weight 1."""
    from fakescan.errors import UsageError

    weights = {name: 1.0 for name in members}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in weights:
            raise UsageError(f"--weights names {name!r}, which is not a fitted member; members: {', '.join(members)}")
        try:
            weights[name] = float(value)
        except ValueError:
            raise UsageError(f"--weights: {item.strip()!r} is not name=number") from None
        if weights[name] < 0:
            raise UsageError(f"--weights: weight of {name} must not be negative")
    if sum(weights.values()) <= 0:
        raise UsageError("--weights: at least one member needs a positive weight")
    return weights
