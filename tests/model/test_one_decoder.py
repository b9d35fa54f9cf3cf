"""One decoder: ``calibrate`` scores EXIF-rotated, RGBA and 16-bit images exactly as a scan stores them.

Each kind of image is built so that a bare ``convert("RGB")`` shows other pixels than
``fakescan.decode.decode_image`` (unrotated, hidden colours under transparency, clipped 16-bit
values); the test checks that difference too, so it would catch a second decoder coming back.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fakescan.catalog import read_manifest, resolve
from fakescan.cli import main
from fakescan.settings import load_settings
from tests.model.labelled_images import labelled_files, write_folder
from worker.detectors import load_detector
from worker.lab.config import TrainConfig
from worker.lab.data import open_labelled
from worker.lab.evaluate import score_set
from worker.lab.train import train

pytestmark = pytest.mark.model
ORIENTATION = 0x0112


def exif_rotated(rng: np.random.Generator) -> bytes:
    """A 48x32 JPEG stored sideways with EXIF orientation 6 (rotate 90° clockwise to view)."""
    pixels = np.zeros((32, 48, 3), np.uint8)
    pixels[:, :24] = rng.integers(0, 255, 3)
    pixels[:, 24:] = rng.integers(0, 255, (32, 24, 3))
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95, exif=exif)
    return buffer.getvalue()


def rgba_with_hidden_colours(rng: np.random.Generator) -> bytes:
    """Saturated noise, fully transparent on the left half: a viewer (and a scan) shows white there."""
    pixels = rng.integers(0, 255, (32, 32, 4)).astype(np.uint8)
    pixels[..., 3] = 255
    pixels[:, :16, 3] = 0
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGBA").save(buffer, format="PNG")
    return buffer.getvalue()


def sixteen_bit_grey(rng: np.random.Generator) -> bytes:
    """A 16-bit greyscale ramp: ``convert("RGB")`` clips it to white, a scan rescales it."""
    ramp = np.linspace(0, 65535, 32 * 32).reshape(32, 32) * rng.uniform(0.3, 1.0)
    buffer = io.BytesIO()
    Image.fromarray(ramp.astype(np.uint16)).save(buffer, format="PNG")
    return buffer.getvalue()


MAKERS = (exif_rotated, rgba_with_hidden_colours, sixteen_bit_grey)


@pytest.fixture(scope="module")
def detector_and_data(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("one-decoder")
    config = TrainConfig(epochs=1, batch_size=8, val_fraction=0.0, threads=2)
    train("compact-cnn", str(write_folder(root / "train", labelled_files(per_class=8))), root / "tiny", config,
          load_settings(), name="tiny", progress=False)
    rng = np.random.default_rng(0)
    data = root / "awkward"
    for label in ("real", "fake"):
        (data / label).mkdir(parents=True)
        for index in range(4):
            for make in MAKERS:
                suffix = "jpg" if make is exif_rotated else "png"
                (data / label / f"{make.__name__}-{index}.{suffix}").write_bytes(make(rng))
    return root / "tiny", data


def test_calibrate_scores_what_the_scan_stores(detector_and_data, tmp_path, capsys):
    folder, data = detector_and_data
    calibrated = tmp_path / "calibrated"
    assert main(["calibrate", str(folder), str(data), "--target-fpr", "0.25", "--uncertain-band", "0.05",
                 "--out", str(calibrated), "--no-progress"]) == 0
    capsys.readouterr()
    settings = load_settings()
    detector = load_detector(resolve(str(calibrated), settings), settings)
    labelled = open_labelled(str(data), settings)
    scored = score_set(detector, labelled, progress=False)["clean"]
    calibration_scores = dict(zip(scored.keys, scored.scores, strict=True))
    assert len(calibration_scores) == 24

    assert main(["scan", str(data), "--detector", str(calibrated), "--batch-size", "8"]) == 0
    capsys.readouterr()
    assert main(["results", "--format", "jsonl", "--detector", "tiny"]) == 0
    stored = {Path(record["uri"].removeprefix("file://")).relative_to(data).as_posix(): record
              for record in map(json.loads, capsys.readouterr().out.splitlines())}

    assert set(stored) == set(calibration_scores)
    thresholds = read_manifest(calibrated)["thresholds"]
    for key, score in calibration_scores.items():
        assert stored[key]["status"] == "ok"
        assert stored[key]["score"] == pytest.approx(score, abs=1e-6), key
        assert stored[key]["verdict"] == detector.thresholds.verdict(score)
    real_scores = [score for key, score in calibration_scores.items() if key.startswith("real/")]
    flagged = sum(stored[key]["score"] >= thresholds["threshold"] for key in stored if key.startswith("real/"))
    assert flagged == sum(score >= thresholds["threshold"] for score in real_scores)
    assert flagged / len(real_scores) <= 0.25


def test_a_bare_convert_would_score_other_pixels(detector_and_data):
    """The images are awkward enough that a second decoder would change every kind's scores."""
    folder, data = detector_and_data
    settings = load_settings()
    detector = load_detector(resolve(str(folder), settings), settings)
    labelled = open_labelled(str(data), settings)
    for make in MAKERS:
        paths = sorted(data.glob(f"*/{make.__name__}-*"))
        scanned = [labelled.decode(path.read_bytes()) for path in paths]
        bare = [Image.open(path).convert("RGB") for path in paths]
        assert any(np.asarray(a).shape != np.asarray(b).shape or not np.array_equal(np.asarray(a), np.asarray(b))
                   for a, b in zip(scanned, bare, strict=True)), make.__name__
        assert detector.scores(scanned) != pytest.approx(detector.scores(bare), abs=1e-7), make.__name__
