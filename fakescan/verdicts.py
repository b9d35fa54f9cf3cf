"""One verdict per object, combined from every detector's stored result under a versioned policy.

Order of evidence:

1. Verified provenance decides. A provenance signal whose kind is in ``decisive_fake`` (default:
   a valid C2PA manifest or an IPTC label saying trained-model output, a generator's settings
   chunk) makes the object ``fake``; one in ``decisive_real`` (default: a C2PA capture manifest
   whose signer chains to a configured trust anchor) makes it ``real``. Both at once is a
   conflict and falls through to step 2.
2. Otherwise the scores that exist are averaged with weights: ``detector_weights`` by detector
   name (``default_weight`` for the rest), the provenance result weighted by what it found
   (``provenance_weights``: weak camera EXIF counts little). The average is ``fake`` at or above
   ``high``, ``real`` below ``low``, ``uncertain`` in between.
3. Nothing scored (every detector failed or found no evidence): no verdict (NULL), explained.

The policy version is its name plus a hash of its parameters, so verdicts computed under
different parameters never overwrite each other. Torch-free: the query side imports this.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

from fakescan.errors import UsageError

DEFAULT_PROVENANCE_WEIGHTS = {
    # used when a kind is not decisive (or decisive signals conflict): how much the provenance
    # detector's score counts next to a calibrated pixel detector (weight 1.0)
    "c2pa-ai": 4.0, "c2pa-capture-trusted": 4.0, "c2pa-generator": 3.0, "iptc-ai": 3.0,
    "generator-parameters": 3.0, "c2pa-synthetic": 2.0, "iptc-synthetic": 2.0, "generator-name": 2.0,
    "c2pa-capture-untrusted": 1.5, "iptc-capture": 0.75, "camera-exif": 0.5, "conflict": 0.0,
}


@dataclass(frozen=True)
class VerdictPolicy:
    name: str = "default"
    decisive_fake: tuple[str, ...] = ("c2pa-ai", "iptc-ai", "generator-parameters")
    decisive_real: tuple[str, ...] = ("c2pa-capture-trusted",)
    provenance_detector: str = "provenance"
    detector_weights: dict[str, float] = field(default_factory=dict)
    default_weight: float = 1.0
    provenance_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_PROVENANCE_WEIGHTS))
    low: float = 0.35
    high: float = 0.65

    def __post_init__(self) -> None:
        if not 0.0 <= self.low <= self.high <= 1.0:
            raise UsageError(f"verdict policy needs 0 <= low <= high <= 1, got low={self.low} high={self.high}")
        weights = [self.default_weight, *self.detector_weights.values(), *self.provenance_weights.values()]
        if any(weight < 0 for weight in weights):
            raise UsageError("verdict policy weights cannot be negative")

    @cached_property  # asked once per object in a batch; the policy is frozen
    def version(self) -> str:
        digest = hashlib.sha256(json.dumps(self.as_json(), sort_keys=True).encode()).hexdigest()[:12]
        return f"{self.name}-{digest}"

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["decisive_fake"], data["decisive_real"] = list(self.decisive_fake), list(self.decisive_real)
        return data

    @classmethod
    def from_json(cls, data: Any) -> "VerdictPolicy":
        """Defaults overridden by the keys given; an unknown key is refused with the valid ones."""
        if not isinstance(data, dict):
            raise UsageError("a verdict policy is a JSON object")
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(f"unknown verdict policy keys {unknown}; valid: {', '.join(sorted(known))}")
        try:
            values: dict[str, Any] = {key: tuple(map(str, value)) if key.startswith("decisive_") else value
                      for key, value in data.items()}
            for key in ("detector_weights", "provenance_weights"):
                if key in values:
                    values[key] = {str(name): float(weight) for name, weight in values[key].items()}
            for key in ("default_weight", "low", "high"):
                if key in values:
                    values[key] = float(values[key])
        except (TypeError, ValueError, AttributeError) as error:
            raise UsageError(f"malformed verdict policy: {error}") from None
        if "provenance_weights" in values:
            values["provenance_weights"] = {**DEFAULT_PROVENANCE_WEIGHTS, **values["provenance_weights"]}
        return cls(**values)


def load_policy(path: Path | None) -> VerdictPolicy:
    """The policy in a JSON file (FAKESCAN_VERDICT_POLICY or --policy), else the default."""
    if path is None:
        return VerdictPolicy()
    try:
        data = json.loads(Path(path).expanduser().read_text())
    except OSError as error:
        raise UsageError(f"cannot read verdict policy {path}: {error.strerror or error}") from None
    except ValueError as error:
        raise UsageError(f"verdict policy {path} is not valid JSON: {error}") from None
    return VerdictPolicy.from_json(data)


@dataclass(frozen=True)
class StoredResult:
    """What the policy reads of one ``results`` row."""

    detector: str
    detector_version: str
    status: str
    score: float | None
    evidence: Any = None
    error: str | None = None


@dataclass(frozen=True)
class Decision:
    verdict: str | None
    score: float | None
    explanation: dict[str, Any]


def combine(results: Sequence[StoredResult], policy: VerdictPolicy) -> Decision:
    skipped = [reason for reason in map(_skip_reason, results) if reason]
    decided = _by_provenance(results, policy)
    if decided is not None:
        decided.explanation["skipped"] = skipped
        return decided
    contributions = []
    for result in results:
        weight = _weight(result, policy)
        if result.status == "ok" and result.score is not None and weight > 0:
            contributions.append({"detector": result.detector, "version": result.detector_version,
                                  "score": result.score, "weight": weight, **_finding(result, policy)})
    explanation: dict[str, Any] = {"policy": policy.version, "contributions": contributions, "skipped": skipped,
                                   "band": {"low": policy.low, "high": policy.high}}
    total = sum(item["weight"] for item in contributions)
    if not total:
        return Decision(None, None, {**explanation, "rule": "no-evidence",
                                     "summary": "no detector produced a score for this object"})
    score = sum(item["score"] * item["weight"] for item in contributions) / total
    verdict = "fake" if score >= policy.high else "real" if score < policy.low else "uncertain"
    summary = f"weighted mean {score:.3f} of {len(contributions)} detector(s) -> {verdict}"
    return Decision(verdict, score, {**explanation, "rule": "weighted", "summary": summary})


def _by_provenance(results: Sequence[StoredResult], policy: VerdictPolicy) -> Decision | None:
    for result in results:
        if result.detector != policy.provenance_detector or result.status != "ok":
            continue
        signals = _signals(result)
        fakes = [s for s in signals if s.get("kind") in policy.decisive_fake]
        reals = [s for s in signals if s.get("kind") in policy.decisive_real]
        if bool(fakes) == bool(reals):
            continue  # nothing decisive, or decisive signals disagree: the weighted step judges
        verdict, deciding = ("fake", fakes) if fakes else ("real", reals)
        score = max(_signal_score(s, 1.0) for s in fakes) if fakes else min(_signal_score(s, 0.0) for s in reals)
        summary = "verified provenance: " + "; ".join(_describe(signal) for signal in deciding)
        overruled = [{"detector": other.detector, "version": other.detector_version, "score": other.score}
                     for other in results if other is not result and other.status == "ok" and other.score is not None]
        return Decision(verdict, score, {"policy": policy.version, "rule": "provenance", "summary": summary,
                                         "detector": result.detector, "version": result.detector_version,
                                         "deciding": deciding, "overruled": overruled})
    return None


def _signals(result: StoredResult) -> list[dict[str, Any]]:
    evidence = result.evidence if isinstance(result.evidence, dict) else {}
    return [signal for signal in evidence.get("signals") or [] if isinstance(signal, dict)]


def _signal_score(signal: dict[str, Any], fallback: float) -> float:
    score = signal.get("score")
    return float(score) if isinstance(score, (int, float)) else fallback


def _weight(result: StoredResult, policy: VerdictPolicy) -> float:
    base = policy.detector_weights.get(result.detector, policy.default_weight)
    if result.detector != policy.provenance_detector:
        return base
    finding = (result.evidence or {}).get("finding") if isinstance(result.evidence, dict) else None
    return base * policy.provenance_weights.get(str(finding), 1.0)


def _finding(result: StoredResult, policy: VerdictPolicy) -> dict[str, Any]:
    if result.detector != policy.provenance_detector or not isinstance(result.evidence, dict):
        return {}
    return {"finding": result.evidence.get("finding"), "summary": result.evidence.get("summary")}


def _skip_reason(result: StoredResult) -> dict[str, Any] | None:
    if result.status != "ok":
        reason = f"error: {result.error or 'unknown'}"
    elif result.score is None:
        evidence = result.evidence if isinstance(result.evidence, dict) else {}
        reason = f"no evidence: {evidence.get('summary') or 'no score'}"
    else:
        return None
    return {"detector": result.detector, "version": result.detector_version, "reason": reason}


def _describe(signal: dict[str, Any]) -> str:
    validation = f" [{signal['validation']}]" if signal.get("validation") else ""
    generator = f" ({signal['generator']})" if signal.get("generator") else ""
    return f"{signal.get('kind')}: {signal.get('source')} {signal.get('field')} = " \
           f"{str(signal.get('value'))[:80]!r}{generator}{validation}"
