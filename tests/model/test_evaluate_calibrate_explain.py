"""evaluate / calibrate / explain on a compact CNN trained on the spot on an easy separable set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fakescan.catalog import read_manifest, resolve
from fakescan.cli import main
from fakescan.settings import load_settings
from tests.model.labelled_images import labelled_files, write_folder, write_zip
from worker.detectors import load_detector
from worker.lab.config import TrainConfig
from worker.lab.data import open_labelled
from worker.lab.evaluate import score_set
from worker.lab.train import train

pytestmark = pytest.mark.model

METRIC_KEYS = ("accuracy", "precision", "recall", "f1", "roc_auc", "average_precision", "ece")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A detector folder and a held-out zip of images it has not seen."""
    root = tmp_path_factory.mktemp("separable")
    training = write_folder(root / "train", labelled_files(per_class=24, seed=0))
    held_out = write_zip(root / "test.zip", labelled_files(per_class=12, seed=100))
    config = TrainConfig(epochs=3, batch_size=8, lr=5e-3, val_fraction=0.0, threads=2)
    train("compact-cnn", str(training), root / "detector", config, load_settings(), progress=False)
    return root / "detector", held_out


def test_evaluate_json_beats_chance(trained, capsys):
    folder, data = trained
    assert main(["evaluate", str(folder), str(data), "--json", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 24 and result["n_real"] == result["n_fake"] == 12
    assert all(0.0 <= result[key] <= 1.0 for key in METRIC_KEYS)
    assert result["roc_auc"] > 0.8 and result["accuracy"] > 0.65
    assert result["version"] == read_manifest(folder)["version"]


def test_evaluate_report_and_perturbations(trained, tmp_path, capsys):
    folder, data = trained
    report = tmp_path / "report"
    assert main(["evaluate", str(folder), str(data), "--json", "--no-progress", "--report", str(report),
                 "--perturb", "jpeg:60,resize:0.5,blur:1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["perturbations"]) == {"jpeg:60", "resize:0.5", "blur:1"}
    assert all(result["perturbations"][name]["n"] == 24 for name in result["perturbations"])
    written = {path.name for path in report.iterdir()}
    assert {"metrics.json", "classification_report.tsv", "roc.png", "precision_recall.png",
            "confusion_matrix.png", "score_histogram.png"} <= written
    assert (report / "roc.png").read_bytes().startswith(b"\x89PNG")
    assert json.loads((report / "metrics.json").read_text())["n"] == 24


def test_bad_perturbation_is_a_usage_error(trained, capsys):
    folder, data = trained
    assert main(["evaluate", str(folder), str(data), "--perturb", "sharpen:2"]) == 2
    assert "jpeg" in capsys.readouterr().err


def test_calibrate_meets_the_target_fpr(trained, tmp_path, capsys):
    folder, data = trained
    copy = tmp_path / "calibrated"
    assert main(["calibrate", str(folder), str(data), "--target-fpr", "0.1", "--uncertain-band", "0.1",
                 "--out", str(copy), "--no-progress"]) == 0
    manifest = read_manifest(copy)
    thresholds = manifest["thresholds"]
    assert thresholds["low"] < thresholds["threshold"] < thresholds["high"]
    assert manifest["version"].startswith(read_manifest(folder)["version"] + "-cal")

    settings = load_settings()
    detector = load_detector(resolve(str(copy), settings), settings)
    scored = score_set(detector, open_labelled(str(data), settings), progress=False)["clean"]
    real_scores = [s for s, label in zip(scored.scores, scored.labels, strict=True) if label == 0]
    false_positives = sum(score >= thresholds["threshold"] for score in real_scores)
    assert false_positives / len(real_scores) <= 0.1
    assert read_manifest(folder)["thresholds"]["threshold"] == 0.5  # the original folder is untouched


def test_explain_writes_both_grad_cams(trained, tmp_path, capsys):
    folder, data = trained
    image = tmp_path / "probe.png"
    image.write_bytes(labelled_files(per_class=1, seed=7)["fake/000.png"])
    assert main(["explain", str(folder), str(image), "--out", str(tmp_path / "maps")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["overlays"]) == {"gradcam-real", "gradcam-fake"}
    for path in result["overlays"].values():
        assert Path(path).read_bytes().startswith(b"\x89PNG")
