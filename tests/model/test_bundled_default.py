"""The bundled detectors: ``default`` (photo-crops, photo scale) and ``cifake`` (the CIFAKE compact CNN)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fakescan.catalog import resolve
from fakescan.cli import main
from fakescan.decode import decode_image
from fakescan.settings import load_settings
from worker.detectors import load_detector

pytestmark = pytest.mark.model
PIXELS = 64_000_000  # the default scan limit

SAMPLES = Path(__file__).resolve().parents[2] / "fakescan" / "samples" / "cifake"


@pytest.mark.parametrize("name, family", [("default", "photo-crops"), ("cifake", "compact-cnn")])
def test_bundled_detector_is_listed_with_its_version(name, family, capsys):
    ref = resolve(name, load_settings())
    assert main(["detectors", "list"]) == 0
    listing = capsys.readouterr().out
    assert ref.family == family and f"version={ref.version}" in listing


@pytest.mark.parametrize("name, family", [("default", "photo-crops"), ("cifake", "compact-cnn")])
def test_bundled_version_names_its_weights_and_command(name, family):
    ref = resolve(name, load_settings())
    weights = Path(ref.location) / "model.safetensors"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert ref.version.startswith(f"{family}-{digest[:10]}")
    assert f"fakescan train {family}" in ref.manifest["training"]["command"]
    assert "/work/" not in json.dumps(ref.manifest) and "/tmp/" not in json.dumps(ref.manifest)
    assert weights.stat().st_size <= 30 << 20


def test_default_judges_a_photo_at_native_scale_with_the_policy_band():
    settings = load_settings()
    ref = resolve("default", settings)
    assert ref.manifest["thresholds"] == {"threshold": 0.65, "low": 0.35, "high": 0.65}
    detector = load_detector(ref, settings)
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (1500, 2000, 3), dtype=np.uint8))
    prediction = detector.predict([photo])[0]
    assert 0.0 <= prediction.score <= 1.0 and len(prediction.parts) == 4
    assert detector.explain(photo)["crop-scores"].size == photo.size


def test_cifake_scores_sample_fakes_above_sample_reals():
    settings = load_settings()
    detector = load_detector(resolve("cifake", settings), settings)
    scores = {label: detector.scores([decode_image(p.read_bytes(), PIXELS)
                                      for p in sorted((SAMPLES / label).glob("*.jpg"))])
              for label in ("real", "fake")}
    assert len(scores["real"]) == len(scores["fake"]) == 12
    assert sum(scores["fake"]) / 12 > sum(scores["real"]) / 12
