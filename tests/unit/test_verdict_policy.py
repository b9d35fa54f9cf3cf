"""The combined-verdict policy on hand-made results: provenance first, then weights, then nothing."""

from __future__ import annotations

import json

import pytest

from fakescan.errors import UsageError
from fakescan.verdicts import StoredResult, VerdictPolicy, combine, load_policy
from worker.detectors.provenance.signals import KIND_SCORES, UNSCORED_KINDS


def provenance(*kinds: str, finding: str | None = None, score: float | None = None) -> StoredResult:
    signals = [{"kind": kind, "source": "test", "field": "f", "value": "v",
                **({"score": KIND_SCORES[kind][0]} if kind in KIND_SCORES else {})} for kind in kinds]
    if score is None and kinds and kinds[0] in KIND_SCORES:
        score = KIND_SCORES[kinds[0]][0]
    evidence = {"finding": finding or (kinds[0] if kinds else "none"), "summary": "s", "signals": signals}
    return StoredResult("provenance", "1.0.0", "ok", score, evidence)


def pixel(score: float | None, name: str = "default", status: str = "ok", error: str | None = None) -> StoredResult:
    return StoredResult(name, "v1", status, score, None, error)


POLICY = VerdictPolicy()


def test_every_kind_the_policy_names_is_one_the_detector_emits():
    emitted = set(KIND_SCORES) | set(UNSCORED_KINDS) | {"conflict"}
    named = set(POLICY.decisive_fake) | set(POLICY.decisive_real) | set(POLICY.provenance_weights)
    assert named <= emitted


@pytest.mark.parametrize("kind", ["c2pa-ai", "iptc-ai", "generator-parameters"])
def test_verified_ai_claim_decides_fake_whatever_the_pixels_say(kind):
    decision = combine([provenance(kind), pixel(0.02)], POLICY)
    assert decision.verdict == "fake" and decision.explanation["rule"] == "provenance"
    assert decision.explanation["deciding"][0]["kind"] == kind
    assert decision.explanation["policy"] == POLICY.version


def test_trusted_capture_decides_real_but_an_untrusted_one_is_only_weighed():
    trusted = combine([provenance("c2pa-capture-trusted"), pixel(0.97)], POLICY)
    assert trusted.verdict == "real" and trusted.explanation["rule"] == "provenance"
    untrusted = combine([provenance("c2pa-capture-untrusted"), pixel(0.97)], POLICY)
    assert untrusted.explanation["rule"] == "weighted"
    weights = {item["detector"]: item["weight"] for item in untrusted.explanation["contributions"]}
    expected = (0.15 * weights["provenance"] + 0.97 * weights["default"]) / sum(weights.values())
    assert untrusted.score == pytest.approx(expected)


def test_invalid_manifest_never_decides():
    decision = combine([provenance("c2pa-invalid", finding="unverified", score=None), pixel(0.2)], POLICY)
    assert decision.explanation["rule"] == "weighted" and decision.verdict == "real"
    assert [item["detector"] for item in decision.explanation["skipped"]] == ["provenance"]


def test_weak_camera_evidence_weighs_less_than_a_pixel_detector():
    decision = combine([provenance("camera-exif"), pixel(0.9)], POLICY)
    weights = {item["detector"]: item["weight"] for item in decision.explanation["contributions"]}
    assert weights["provenance"] < weights["default"]
    assert decision.verdict == "fake"


def test_uncertain_band_and_detector_weights():
    policy = VerdictPolicy(detector_weights={"strong": 3.0})
    decision = combine([pixel(0.9, "strong"), pixel(0.1, "weak")], policy)
    assert decision.score == pytest.approx((0.9 * 3 + 0.1) / 4)
    assert combine([pixel(0.5, "a")], policy).verdict == "uncertain"
    assert combine([pixel(policy.low - 0.01, "a")], policy).verdict == "real"
    assert combine([pixel(policy.high, "a")], policy).verdict == "fake"


def test_conflicting_decisive_signals_fall_back_to_weights():
    decision = combine([provenance("c2pa-capture-trusted", "iptc-ai", finding="conflict", score=0.5), pixel(0.8)],
                       POLICY)
    assert decision.explanation["rule"] == "weighted"
    assert [item["detector"] for item in decision.explanation["contributions"]] == ["default"]  # conflict weighs 0


def test_nothing_scored_is_no_verdict():
    decision = combine([provenance(), pixel(None, status="error", error="corrupt: truncated")], POLICY)
    assert decision.verdict is None and decision.score is None and decision.explanation["rule"] == "no-evidence"
    reasons = sorted(item["reason"] for item in decision.explanation["skipped"])
    assert reasons == ["error: corrupt: truncated", "no evidence: s"]


def test_policy_version_follows_its_parameters():
    assert VerdictPolicy().version == VerdictPolicy().version
    assert VerdictPolicy(high=0.7).version != POLICY.version
    assert VerdictPolicy().version.startswith("default-")


def test_policy_file(tmp_path):
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"name": "strict", "decisive_fake": ["c2pa-ai"], "detector_weights": {"default": 2},
                                "provenance_weights": {"camera-exif": 0}}))
    policy = load_policy(path)
    assert policy.version.startswith("strict-") and policy.decisive_fake == ("c2pa-ai",)
    assert policy.provenance_weights["camera-exif"] == 0 and policy.provenance_weights["iptc-capture"] == 0.75
    assert combine([provenance("iptc-ai"), pixel(0.1)], policy).explanation["rule"] == "weighted"


@pytest.mark.parametrize("content, message", [
    ('{"hihg": 0.7}', "unknown verdict policy keys ['hihg']"),
    ('{"low": 0.8, "high": 0.6}', "0 <= low <= high <= 1"),
    ('{"detector_weights": {"a": -1}}', "cannot be negative"),
    ('{"low": "x"}', "malformed verdict policy"),
    ("[1, 2]", "a verdict policy is a JSON object"),
    ("{nope", "not valid JSON"),
])
def test_bad_policy_files_are_usage_errors(tmp_path, content, message):
    path = tmp_path / "policy.json"
    path.write_text(content)
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_policy(path)
    with pytest.raises(UsageError, match="cannot read verdict policy"):
        load_policy(tmp_path / "absent.json")
