"""C2PA manifests signed in the test with a throw-away CA: AI claims, captures, tampering, garbage."""

from __future__ import annotations

import pytest

from fakescan.catalog import resolve
from fakescan.errors import DetectorError, UsageError
from fakescan.settings import load_settings
from tests import provenance_support as files
from worker.detectors import load_detector
from worker.detectors.base import Sample
from worker.detectors.provenance import ProvenanceDetector


@pytest.fixture(scope="module")
def signer() -> files.TestSigner:
    return files.TestSigner.create()


@pytest.fixture(scope="module")
def untrusting() -> ProvenanceDetector:
    return ProvenanceDetector("provenance", "test", {})


@pytest.fixture(scope="module")
def trusting(signer) -> ProvenanceDetector:
    return ProvenanceDetector("provenance", "test", {}, trust_anchors_pem=signer.root_pem)


@pytest.fixture(scope="module")
def ai_jpeg(signer) -> bytes:
    return signer.sign(files.jpeg(), "image/jpeg", "trainedAlgorithmicMedia", generator="Adobe Firefly 3.1")


def inspect(detector: ProvenanceDetector, data: bytes):
    (prediction,) = detector.predict_samples([Sample("mem://x", data)])
    return prediction


def test_valid_ai_manifest_is_strong_evidence_of_ai(untrusting, ai_jpeg):
    prediction = inspect(untrusting, ai_jpeg)
    record = prediction.evidence["c2pa"]
    assert record["state"] == "valid" and record["trusted"] is False
    assert record["signature_valid"] and record["hash_binding_valid"]
    assert record["signer"] == "fakescan test signer" and record["issuer"] == "fakescan tests"
    assert record["claim_generator"].startswith("Adobe Firefly")
    assert prediction.evidence["finding"] == "c2pa-ai" and untrusting.verdict(prediction.score) == "fake"
    ai = next(s for s in prediction.evidence["signals"] if s["kind"] == "c2pa-ai")
    assert ai["value"].endswith("trainedAlgorithmicMedia") and ai["validation"] == "valid"
    assert {"c2pa-ai", "c2pa-generator"} <= {s["kind"] for s in prediction.evidence["signals"]}
    assert prediction.score > max(s["score"] for s in prediction.evidence["signals"] if s["kind"] != "c2pa-ai") - 1e-9


def test_capture_manifest_from_a_trusted_signer_is_strong_evidence_of_real(signer, untrusting, trusting):
    capture = signer.sign(files.jpeg(files.camera_exif()), "image/jpeg", "digitalCapture")
    trusted = inspect(trusting, capture)
    assert trusted.evidence["c2pa"]["state"] == "trusted"
    assert trusted.evidence["finding"] == "c2pa-capture-trusted" and trusting.verdict(trusted.score) == "real"
    untrusted = inspect(untrusting, capture)
    assert untrusted.evidence["finding"] == "c2pa-capture-untrusted"
    assert trusted.score < untrusted.score < 0.5  # an unknown signer's capture claim counts, but less


def test_trust_anchors_come_from_settings(signer, tmp_path, monkeypatch):
    anchors = tmp_path / "anchors.pem"
    anchors.write_text(signer.root_pem)
    monkeypatch.setenv("FAKESCAN_C2PA_TRUST_ANCHORS", str(anchors))
    settings = load_settings()
    detector = load_detector(resolve("provenance", settings), settings)
    capture = signer.sign(files.jpeg(), "image/jpeg", "digitalCapture")
    assert inspect(detector, capture).evidence["c2pa"]["trusted"] is True


def test_trust_anchors_are_part_of_the_version(signer, tmp_path, monkeypatch):
    """New anchors change what provenance concludes, so they must re-scan what the old ones judged."""
    monkeypatch.delenv("FAKESCAN_C2PA_TRUST_ANCHORS", raising=False)
    plain = resolve("provenance", load_settings()).version
    anchors = tmp_path / "anchors.pem"
    anchors.write_text(signer.root_pem)
    monkeypatch.setenv("FAKESCAN_C2PA_TRUST_ANCHORS", str(anchors))
    first = resolve("provenance", load_settings())
    assert plain == "1.0.0" and first.version.startswith("1.0.0+") and first.version != plain
    anchors.write_text(signer.root_pem + "\n")  # another bundle, another version
    second = resolve("provenance", load_settings())
    assert second.version not in (plain, first.version)

    # a worker whose anchors differ from those the scan was resolved with refuses to judge
    with pytest.raises(DetectorError, match="configure the same trust anchors"):
        load_detector(first, load_settings())
    assert load_detector(second, load_settings()).version == second.version

    monkeypatch.setenv("FAKESCAN_C2PA_TRUST_ANCHORS", str(tmp_path / "missing.pem"))
    with pytest.raises(UsageError, match="FAKESCAN_C2PA_TRUST_ANCHORS: cannot read"):
        resolve("provenance", load_settings())


def test_pixels_altered_after_signing_break_the_binding(untrusting, ai_jpeg):
    prediction = inspect(untrusting, files.alter_pixels(ai_jpeg))
    record = prediction.evidence["c2pa"]
    assert record["state"] == "invalid" and record["hash_binding_valid"] is False
    assert "assertion.dataHash.mismatch" in {failure["code"] for failure in record["failures"]}
    assert [s["kind"] for s in prediction.evidence["signals"]] == ["c2pa-invalid"]
    assert prediction.score is None and prediction.error is None  # reported, never trusted


def test_tampered_manifest_does_not_hide_other_metadata(signer, untrusting):
    signed = signer.sign(files.jpeg(files.camera_exif()), "image/jpeg", "trainedAlgorithmicMedia")
    prediction = inspect(untrusting, files.alter_pixels(signed))
    assert sorted(s["kind"] for s in prediction.evidence["signals"]) == ["c2pa-invalid", "camera-exif"]
    assert prediction.evidence["finding"] == "camera-exif"


def test_signed_png(signer, untrusting):
    signed = signer.sign(files.png_with_text({}), "image/png", "trainedAlgorithmicMedia")
    prediction = inspect(untrusting, signed)
    assert prediction.evidence["format"] == "png" and prediction.evidence["finding"] == "c2pa-ai"


def test_malformed_manifest_is_an_error_for_this_detector_only(untrusting, ai_jpeg):
    prediction = inspect(untrusting, files.corrupt_manifest(ai_jpeg))
    assert prediction.score is None and prediction.error.startswith("bad-metadata: C2PA manifest cannot be read")
