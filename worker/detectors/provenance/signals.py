"""Provenance signals and how they turn into one score.

Each signal has a *kind* from a fixed vocabulary (the verdict policy in ``fakescan.verdicts``
names the same kinds), a P(AI-generated) it stands for and a tier saying how much it can be
trusted: 3 = cryptographically verified (valid C2PA), 2 = strong but unsigned (generator
metadata, IPTC AI labels, an untrusted signer's capture claim), 1 = weak (camera EXIF, unsigned
capture labels). The highest tier present decides; disagreement inside it is a conflict (0.5).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# kind -> (P(AI-generated), tier). Kinds without an entry (c2pa-invalid, info) carry no score.
KIND_SCORES: dict[str, tuple[float, int]] = {
    "c2pa-ai": (0.99, 3),
    "c2pa-synthetic": (0.9, 3),
    "c2pa-generator": (0.95, 3),
    "c2pa-capture-trusted": (0.02, 3),
    "c2pa-capture-untrusted": (0.15, 2),
    "iptc-ai": (0.97, 2),
    "iptc-synthetic": (0.85, 2),
    "generator-parameters": (0.97, 2),
    "generator-name": (0.9, 2),
    "iptc-capture": (0.25, 1),
    "camera-exif": (0.3, 1),
}
UNSCORED_KINDS = ("c2pa-invalid", "c2pa-neutral", "iptc-neutral", "info")
CONFLICT_SCORE = 0.5


@dataclass(frozen=True)
class Signal:
    kind: str
    source: str  # c2pa, xmp, exif, png:tEXt, jpeg:COM ...
    field: str
    value: str
    generator: str | None = None
    validation: str | None = None  # C2PA only: trusted | valid | invalid
    details: dict[str, Any] = dataclasses.field(default_factory=dict)  # `field` is the attribute above

    @property
    def score(self) -> float | None:
        entry = KIND_SCORES.get(self.kind)
        return entry[0] if entry else None

    @property
    def tier(self) -> int:
        entry = KIND_SCORES.get(self.kind)
        return entry[1] if entry else 0

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, "source": self.source, "field": self.field,
                                "value": self.value[:300]}
        for name in ("generator", "validation"):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        if self.score is not None:
            data["score"], data["tier"] = self.score, self.tier
        if self.details:
            data["details"] = self.details
        return data


@dataclass(frozen=True)
class Judgement:
    score: float | None
    finding: str  # the deciding kind, "conflict", "unverified" (only unscored signals) or "none"
    deciding: tuple[Signal, ...]


def judge(signals: list[Signal]) -> Judgement:
    scored = [(signal, score) for signal in signals if (score := signal.score) is not None]
    if not scored:
        return Judgement(None, "unverified" if signals else "none", tuple(signals))
    top_tier = max(signal.tier for signal, _ in scored)
    top = [(signal, score) for signal, score in scored if signal.tier == top_tier]
    says_ai = [signal for signal, score in top if score > CONFLICT_SCORE]
    says_real = [signal for signal, score in top if score < CONFLICT_SCORE]
    if says_ai and says_real:
        return Judgement(CONFLICT_SCORE, "conflict", tuple(signal for signal, _ in top))
    if says_ai:
        strongest = max(says_ai, key=lambda signal: signal.score or 0.0)
        return Judgement(strongest.score, strongest.kind, tuple(says_ai))
    strongest = min(says_real, key=lambda signal: signal.score or 1.0)
    return Judgement(strongest.score, strongest.kind, tuple(says_real))


def parts(signals: list[Signal]) -> dict[str, float] | None:
    """The score each scored kind stands for, for the results table's ``parts`` column."""
    found = {signal.kind: score for signal in signals if (score := signal.score) is not None}
    return found or None
