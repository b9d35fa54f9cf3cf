"""The hf-classifier family: any transformers image-classification checkpoint, from a folder or S3."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import boto3
import pytest
import torch

from fakescan import catalog
from fakescan.errors import DetectorError
from fakescan.settings import load_settings
from tests.tiny_models import build_tiny_siglip_checkpoint, tiny_images
from worker.detectors import load_detector
from worker.detectors.hf_classifier import HFClassifier, fake_label_indices

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_siglip_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny-siglip")


def upload_folder(folder: Path, bucket: str, prefix: str, endpoint: str) -> str:
    client = boto3.client("s3", endpoint_url=endpoint)
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")
    return f"s3://{bucket}/{prefix}"


def manual_fake_probability(folder: Path, images: list, fake_index: int) -> list[float]:
    """The same probability computed straight from transformers, to check the detector's arithmetic."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    inputs = AutoImageProcessor.from_pretrained(folder, backend="pil")(images=images, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    return logits.softmax(-1)[:, fake_index].tolist()


def test_checkpoint_folder_is_a_detector_scoring_p_fake(checkpoint: Path) -> None:
    settings = load_settings()
    ref = catalog.resolve(str(checkpoint), settings)
    assert ref.family == "hf-classifier" and ref.version.startswith("hf-")
    detector = load_detector(ref, settings)
    assert isinstance(detector, HFClassifier) and not detector.model.training
    images = tiny_images(6)
    scores = [p.score for p in detector.predict(images)]
    assert len(scores) == 6 and all(0.0 <= s <= 1.0 for s in scores)
    assert len(set(round(s, 6) for s in scores)) > 1  # a random net still tells inputs apart
    assert scores == pytest.approx(manual_fake_probability(checkpoint, images, fake_index=1), abs=1e-5)
    one_by_one = [detector.predict([image])[0].score for image in images]
    assert one_by_one == pytest.approx(scores, abs=1e-5)


def test_same_scores_from_an_s3_prefix(checkpoint: Path, s3_service, s3_bucket: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKESCAN_S3_ENDPOINT_URL", s3_service.url)
    settings = load_settings()
    uri = upload_folder(checkpoint, s3_bucket, "models/tiny-siglip", s3_service.url)
    ref = catalog.resolve(uri, settings)
    assert (ref.family, ref.location, ref.name) == ("hf-classifier", uri, "tiny-siglip")
    assert catalog.resolve(uri + "/", settings).version == ref.version
    from_s3 = load_detector(ref, settings)
    cached = catalog.local_folder(ref, settings)
    assert cached is not None and (cached / "model.safetensors").is_file()
    assert cached.is_relative_to(settings.home)
    images = tiny_images(4, seed=3)
    from_disk = load_detector(catalog.resolve(str(checkpoint), settings), settings)
    assert [p.score for p in from_s3.predict(images)] == [p.score for p in from_disk.predict(images)]


def test_label_names_and_override(tmp_path: Path) -> None:
    assert fake_label_indices({0: "Real", 1: "AI_Generated"}) == [1]
    assert fake_label_indices({"0": "artificial", "1": "deepfake", "2": "real"}) == [0, 1]
    assert fake_label_indices({0: "cat", 1: "dog"}, override="Dog") == [1]
    with pytest.raises(DetectorError, match=r"'cat', 'dog'.*fake_label"):
        fake_label_indices({0: "cat", 1: "dog"})
    with pytest.raises(DetectorError, match="'horse' matches none"):
        fake_label_indices({0: "cat", 1: "dog"}, override="horse")
    with pytest.raises(DetectorError, match="every checkpoint label"):
        fake_label_indices({0: "fake", 1: "synthetic"})


def test_unmapped_labels_refuse_to_load_until_the_manifest_names_one(tmp_path: Path) -> None:
    settings = load_settings()
    folder = build_tiny_siglip_checkpoint(tmp_path / "pets", labels=("cat", "dog"))
    with pytest.raises(DetectorError, match="'cat', 'dog'"):
        load_detector(catalog.resolve(str(folder), settings), settings)
    manifest = {"name": "pets", "family": "hf-classifier", "version": "1", "fake_label": "dog"}
    (folder / catalog.MANIFEST).write_text(json.dumps(manifest))
    detector = load_detector(catalog.resolve(str(folder), settings), settings)
    assert detector.fake_indices == [1] and detector.version == "1"
    images = tiny_images(3)
    assert [p.score for p in detector.predict(images)] == pytest.approx(
        manual_fake_probability(folder, images, fake_index=1), abs=1e-5)


def test_single_logit_head_is_a_sigmoid(tmp_path: Path) -> None:
    settings = load_settings()
    folder = build_tiny_siglip_checkpoint(tmp_path / "one", labels=("synthetic",))
    detector = load_detector(catalog.resolve(str(folder), settings), settings)
    images = tiny_images(3)
    with torch.no_grad():
        logits = detector.model(**detector.pixel_inputs(images)).logits
    assert logits.shape == (3, 1)
    assert [p.score for p in detector.predict(images)] == pytest.approx(logits.sigmoid()[:, 0].tolist(), abs=1e-6)


def test_multi_label_checkpoint_scores_with_a_sigmoid(tmp_path: Path) -> None:
    folder = build_tiny_siglip_checkpoint(tmp_path / "multi", labels=("photo", "ai_generated", "edited"))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "problem_type": "multi_label_classification"}))
    detector = HFClassifier.load(folder, load_settings(), {})
    images = tiny_images(3)
    with torch.no_grad():
        logits = detector.model(**detector.pixel_inputs(images)).logits
    assert [p.score for p in detector.predict(images)] == pytest.approx(logits.sigmoid()[:, 1].tolist(), abs=1e-6)


def test_a_folder_without_a_usable_checkpoint_is_a_detector_error(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(DetectorError, match="no Hugging Face checkpoint"):
        HFClassifier.load(tmp_path / "missing", load_settings(), {})
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(checkpoint / "config.json", pickled)
    (pickled / "pytorch_model.bin").write_bytes(b"not unpickled, whatever it holds")
    with pytest.raises(DetectorError, match=r"pytorch_model.bin is pickled and is not loaded"):
        HFClassifier.load(pickled, load_settings(), {})
    corrupt = tmp_path / "corrupt"
    shutil.copytree(checkpoint, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    with pytest.raises(DetectorError, match="cannot load the checkpoint"):
        HFClassifier.load(corrupt, load_settings(), {})


def test_missing_s3_detector_is_a_one_line_error(s3_service, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from fakescan.errors import SourceError

    monkeypatch.setenv("FAKESCAN_S3_ENDPOINT_URL", s3_service.url)
    settings = load_settings()
    with pytest.raises(SourceError, match="cannot list detector at s3://no-such-bucket-here/m"):
        catalog.resolve("s3://no-such-bucket-here/m", settings)
    with pytest.raises(catalog.UnknownDetector, match="expected fakescan.json or a transformers config.json"):
        catalog.resolve(f"s3://{s3_bucket}/empty", settings)


def test_bf16_on_a_bf16_cpu_halves_the_weights_and_keeps_the_scores(checkpoint: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """FAKESCAN_PRECISION=bf16 on a CPU with bf16 arithmetic (this test pretends, so it runs on any
    x86 CPU: oneDNN emulates bf16 where it is missing): bf16 weights under CPU autocast, scores within
    0.01 of fp32 (SigLIP-base-sized, 48 photos: docs/results/2026-12-01-cpu-bf16.md)."""
    from worker.detectors import device as placement

    monkeypatch.setattr(placement, "cpu_runs_bf16", lambda: True)
    images = tiny_images(6, seed=3)
    fp32 = HFClassifier.load(checkpoint, load_settings(precision="fp32"), {})
    bf16 = HFClassifier.load(checkpoint, load_settings(precision="bf16"), {})
    assert {p.dtype for p in fp32.model.parameters()} == {torch.float32}
    assert {p.dtype for p in bf16.model.parameters()} == {torch.bfloat16}
    expected = [p.score for p in fp32.predict(images)]
    found = [p.score for p in bf16.predict(images)]
    assert all(isinstance(score, float) for score in found)
    assert found == pytest.approx(expected, abs=0.01) and found != expected


def test_large_batches_are_scored_in_chunks(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    detector = HFClassifier.load(checkpoint, load_settings(), {})
    images = tiny_images(5, seed=2)
    whole = [p.score for p in detector.predict(images)]
    monkeypatch.setattr(HFClassifier, "predict_batch_size", 2)
    assert [p.score for p in detector.predict(images)] == pytest.approx(whole, abs=1e-6)
    assert detector.predict([]) == []


def test_half_precision_autocasts_on_cuda_and_bf16_cpus_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.detectors import device as placement
    from worker.detectors.hf_classifier import autocast

    monkeypatch.setattr(placement, "cpu_runs_bf16", lambda: False)
    for device, precision in (("cpu", "bf16"), ("cpu", "fp16"), ("cuda", "fp32"), ("cuda:1", "fp32")):
        assert not isinstance(autocast(device, precision), torch.autocast)
    monkeypatch.setattr(placement, "cpu_runs_bf16", lambda: True)
    assert isinstance(autocast("cpu", "bf16"), torch.autocast)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns when the machine has no GPU; the choice is what is tested
        context = autocast("cuda", "bf16")
    assert isinstance(context, torch.autocast) and context.fast_dtype == torch.bfloat16


def test_the_pil_image_processor_scores_like_the_torchvision_one(checkpoint: Path) -> None:
    """Checkpoints load their PIL image processor (a worker never imports torchvision for it): on
    images decoded as a scan decodes them, its pixels are within one 8-bit level of the torchvision
    processor's and the scores within 0.001 (48 generated 2-12 MP photos with a SigLIP-base-sized
    model: at most 0.00035, docs/results/2026-12-01-worker-memory-prefetch.md)."""
    from transformers import AutoImageProcessor

    from fakescan.decode import decode_image
    from tests.benchmarks.photos import jpeg, photo

    detector = load_detector(catalog.resolve(str(checkpoint), load_settings()), load_settings())
    torchvision_processor = AutoImageProcessor.from_pretrained(checkpoint, local_files_only=True,
                                                               backend="torchvision")
    assert type(detector.processor).__name__.endswith("Pil")
    images = [decode_image(jpeg(photo(640, 480, seed)), 10**8, detector.input_need().side) for seed in range(6)]
    ours = detector.stacked([detector.prepare(image) for image in images])["pixel_values"]
    theirs = torchvision_processor(images=images, return_tensors="pt")["pixel_values"]
    one_level = 1 / 255 / 0.5  # rescaled, then normalised with std 0.5
    assert (ours - theirs).abs().max().item() <= one_level + 1e-6
    scores = [p.score for p in detector.predict_inputs([{"pixel_values": row.numpy()} for row in ours])]
    reference = [p.score for p in detector.predict_inputs([{"pixel_values": row.numpy()} for row in theirs])]
    assert scores == pytest.approx(reference, abs=1e-3)


WORKER_IMPORTS = r"""
import sys
import transformers  # a plain import first: transformers caches what it found installed
from pathlib import Path
from worker.detectors.hf_classifier import load_checkpoint
model, processor = load_checkpoint(Path(sys.argv[1]))
print(type(processor).__name__, "transformers.image_utils" in sys.modules, "scipy" in sys.modules,
      "torchvision" in sys.modules)
import torchvision.models  # a family that needs it still imports it
print(torchvision.models.__name__)
"""


def test_loading_a_checkpoint_imports_neither_torchvision_nor_scipy(checkpoint: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", WORKER_IMPORTS, str(checkpoint)], capture_output=True, text=True,
                            check=True, cwd=Path(__file__).resolve().parents[2])
    assert result.stdout.split() == ["SiglipImageProcessorPil", "True", "False", "False",
                                      "torchvision.models"]
