"""The bundled default detector: listed with its version, intact, and telling the samples apart."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from fakescan.catalog import resolve
from fakescan.cli import main
from fakescan.settings import load_settings
from worker.detectors import load_detector
from worker.decode import decode_image

pytestmark = pytest.mark.model
PIXELS = 64_000_000  # the default scan limit

SAMPLES = Path(__file__).resolve().parents[2] / "fakescan" / "samples" / "cifake"


def test_default_is_listed_with_its_version(capsys):
    ref = resolve("default", load_settings())
    assert main(["detectors", "list"]) == 0
    listing = capsys.readouterr().out
    assert ref.family == "compact-cnn" and f"version={ref.version}" in listing


def test_default_version_names_its_weights():
    ref = resolve("default", load_settings())
    digest = hashlib.sha256((Path(ref.location) / "model.safetensors").read_bytes()).hexdigest()
    assert ref.version.startswith(f"compact-cnn-{digest[:10]}")
    assert "fakescan train compact-cnn" in ref.manifest["training"]["command"]


def test_default_scores_sample_fakes_above_sample_reals():
    settings = load_settings()
    detector = load_detector(resolve("default", settings), settings)
    scores = {label: detector.scores([decode_image(p.read_bytes(), PIXELS) for p in sorted((SAMPLES / label).glob("*.jpg"))])
              for label in ("real", "fake")}
    assert len(scores["real"]) == len(scores["fake"]) == 12
    assert sum(scores["fake"]) / 12 > sum(scores["real"]) / 12
