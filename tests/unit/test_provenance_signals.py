"""The provenance detector on files built in code: each metadata signal, absence, and hostile input."""

from __future__ import annotations

import io
import zlib

import pytest
from PIL import Image

from fakescan.catalog import resolve
from fakescan.settings import load_settings
from tests import provenance_support as files
from worker.detectors import load_detector
from worker.detectors.base import Sample
from worker.detectors.provenance import ProvenanceDetector
from worker.detectors.provenance.containers import MAX_TEXT_BYTES
from worker.detectors.provenance.signals import KIND_SCORES


@pytest.fixture(scope="module")
def detector() -> ProvenanceDetector:
    return ProvenanceDetector("provenance", "test", {})


def inspect(detector: ProvenanceDetector, data: bytes):
    (prediction,) = detector.predict_samples([Sample("mem://x", data)])
    return prediction


def kinds(prediction) -> list[str]:
    return [signal["kind"] for signal in prediction.evidence["signals"]]


def test_catalog_exposes_a_weightless_detector_that_needs_no_pixels():
    settings = load_settings()
    ref = resolve("provenance", settings)
    assert (ref.family, ref.location) == ("provenance", None)
    detector = load_detector(ref, settings)
    assert detector.needs_pixels is False and detector.version == ref.version


def test_no_metadata_is_no_evidence_not_real(detector):
    for data in (files.jpeg(), files.png_with_text({})):
        prediction = inspect(detector, data)
        assert prediction.score is None and prediction.error is None
        assert detector.verdict(prediction.score) is None
        assert prediction.evidence["finding"] == "none"
        assert prediction.evidence["summary"] == "no provenance metadata"


def test_a1111_parameters_chunk(detector):
    prediction = inspect(detector, files.png_with_text({"parameters": files.A1111_PARAMETERS}))
    assert detector.verdict(prediction.score) == "fake"
    (signal,) = prediction.evidence["signals"]
    assert signal["kind"] == "generator-parameters" and signal["field"] == "parameters"
    assert signal["details"]["Sampler"] == "DPM++ 2M Karras" and signal["details"]["Seed"] == "1234"
    assert signal["value"].startswith("Steps: 28")


def test_comfyui_prompt_and_workflow(detector):
    workflow = '{"nodes": [{"id": 3, "type": "KSampler"}], "links": []}'
    prediction = inspect(detector, files.png_with_text({"prompt": files.comfy_prompt(), "workflow": workflow},
                                                       compressed=True))
    assert detector.verdict(prediction.score) == "fake"
    prompt = next(s for s in prediction.evidence["signals"] if s["field"] == "prompt")
    assert prompt["generator"] == "ComfyUI" and "KSampler" in prompt["details"]["classes"]
    assert prompt["details"]["models"] == ["sd_xl_base_1.0.safetensors"]
    assert {s["field"] for s in prediction.evidence["signals"]} == {"prompt", "workflow"}


def test_a_bare_prompt_key_proves_nothing(detector):
    prediction = inspect(detector, files.png_with_text({"prompt": "a cat on a mat"}))
    assert prediction.score is None and kinds(prediction) == []


def test_novelai_and_invokeai_text(detector):
    novelai = files.png_with_text({"Software": "NovelAI", "Comment": '{"steps": 28, "sampler": "k_euler", "seed": 7}'})
    prediction = inspect(detector, novelai)
    assert sorted(kinds(prediction)) == ["generator-name", "generator-parameters"]
    assert {s["generator"] for s in prediction.evidence["signals"]} == {"NovelAI"}
    invoke = inspect(detector, files.png_with_text({"invokeai_metadata": '{"model": {"name": "sdxl"}, "steps": 30}'}))
    assert invoke.evidence["signals"][0]["generator"] == "InvokeAI" and detector.verdict(invoke.score) == "fake"


def test_xmp_digital_source_type_and_creator_tool(detector):
    ai = inspect(detector, files.jpeg_with_xmp(files.xmp_packet("trainedAlgorithmicMedia")))
    assert kinds(ai) == ["iptc-ai"] and detector.verdict(ai.score) == "fake"
    composite = inspect(detector, files.jpeg_with_xmp(files.xmp_packet("compositeWithTrainedAlgorithmicMedia")))
    assert kinds(composite) == ["iptc-ai"]
    tool = inspect(detector, files.jpeg_with_xmp(files.xmp_packet(creator_tool="Adobe Firefly 3")))
    assert tool.evidence["signals"][0]["generator"] == "Adobe Firefly"
    capture = inspect(detector, files.jpeg_with_xmp(files.xmp_packet("digitalCapture")))
    assert kinds(capture) == ["iptc-capture"] and detector.verdict(capture.score) == "real"


def test_exif_software_naming_a_generator(detector):
    exif = files.exif_tags({0x0131: "Midjourney v6", 0x010E: "a cat"})
    prediction = inspect(detector, files.jpeg(exif))
    (signal,) = prediction.evidence["signals"]
    assert (signal["kind"], signal["field"], signal["generator"]) == ("generator-name", "Software", "Midjourney")
    assert detector.verdict(prediction.score) == "fake"


def test_a1111_jpeg_user_comment(detector):
    comment = b"UNICODE\x00" + files.A1111_PARAMETERS.encode("utf-16-be")
    prediction = inspect(detector, files.jpeg(files.exif_tags({}, {0x9286: comment})))
    assert kinds(prediction) == ["generator-parameters"]
    assert prediction.evidence["signals"][0]["details"]["Model"] == "sd_xl_base_1.0"


def test_camera_exif_is_weak_evidence_of_capture(detector):
    prediction = inspect(detector, files.jpeg(files.camera_exif()))
    (signal,) = prediction.evidence["signals"]
    assert signal["kind"] == "camera-exif" and signal["value"] == "Canon Canon EOS R5"
    assert signal["details"]["ISOSpeedRatings"] == "200"
    weakest_ai = min(score for score, _ in KIND_SCORES.values() if score > 0.5)
    assert 0.5 - prediction.score < weakest_ai - 0.5  # weak: closer to undecided than any AI signal


def test_generator_metadata_outranks_copied_camera_exif(detector):
    exif = files.exif_tags({0x010F: "Canon", 0x0110: "Canon EOS R5", 0x0131: "ComfyUI"})
    prediction = inspect(detector, files.jpeg(exif))
    assert sorted(kinds(prediction)) == ["camera-exif", "generator-name"]
    assert prediction.evidence["finding"] == "generator-name" and detector.verdict(prediction.score) == "fake"


def test_jpeg_comment(detector):
    prediction = inspect(detector, files.with_segment(files.jpeg(), 0xFE, b"Generated by Stable Diffusion XL"))
    assert prediction.evidence["signals"][0]["source"] == "jpeg:COM"
    assert prediction.evidence["signals"][0]["generator"] == "Stable Diffusion"


def test_webp_xmp(detector):
    buffer = io.BytesIO()
    files.pixels().save(buffer, "WEBP", xmp=files.xmp_packet("trainedAlgorithmicMedia"))
    prediction = inspect(detector, buffer.getvalue())
    assert prediction.evidence["format"] == "webp" and kinds(prediction) == ["iptc-ai"]


HOSTILE = {
    "oversized text chunk": (
        lambda: files.png_with_raw_chunk(b"tEXt", b"parameters\x00" + b"x" * (MAX_TEXT_BYTES + 1)), "exceeds"),
    "compressed text bomb": (
        lambda: files.png_with_raw_chunk(b"zTXt", b"prompt\x00\x00" + zlib.compress(b"\x00" * (64 << 20))),
        "inflates beyond"),
    "chunk past the end": (lambda: files.png_with_text({"parameters": "x" * 40})[:60], "runs past the end"),
    "broken XMP": (lambda: files.jpeg_with_xmp(b"<x:xmpmeta><rdf:RDF>unclosed"), "malformed XMP"),
    "XMP entity bomb": (lambda: files.jpeg_with_xmp(b'<!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>'), "DTD"),
    "absurd EXIF string": (
        lambda: files.png_with_raw_chunk(b"eXIf", files.exif_tags({0x0131: "A" * 100_000}).tobytes()),
        "characters long"),
    "deeply nested JSON": (lambda: files.png_with_text({"prompt": "[" * 100_000 + "]" * 100_000}), "deep JSON"),
    "not an image": (lambda: b"%PDF-1.4 definitely not a picture", "not-an-image: no image format"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_metadata_is_this_detectors_error(detector, name):
    build, reason = HOSTILE[name]
    prediction = inspect(detector, build())
    assert prediction.score is None and prediction.error is not None
    assert reason in prediction.error and prediction.error.startswith(("bad-metadata: ", "not-an-image: "))


def test_one_hostile_file_does_not_spoil_the_batch(detector):
    good = files.png_with_text({"parameters": files.A1111_PARAMETERS})
    bad = files.jpeg_with_xmp(b"<broken")
    predictions = detector.predict_samples([Sample("a", good), Sample("b", bad), Sample("c", files.jpeg())])
    assert [p.error is None for p in predictions] == [True, False, True]
    assert predictions[0].score is not None and predictions[2].score is None


def test_pixels_are_never_decoded(detector):
    def refuse(_: bytes) -> Image.Image:
        raise AssertionError("decoded")

    sample = Sample("x", files.png_with_text({"parameters": files.A1111_PARAMETERS}), decoder=refuse)
    assert detector.predict_samples([sample])[0].score is not None
