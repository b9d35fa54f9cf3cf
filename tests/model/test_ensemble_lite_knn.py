"""The opt-in ensemble member ``lite-knn``: nearest real photos in a photo-crops detector's backbone features."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from fakescan.catalog import ref_from_folder
from fakescan.cli import main
from fakescan.settings import load_settings
from tests.model.ensemble_images import planted_anomalies, smooth_scenes
from worker.detectors import load_detector
from worker.detectors.ensemble import member_names, parse_members
from worker.detectors.ensemble.detector import MEMBERS_DIR
from worker.detectors.ensemble.features import FeatureBank
from worker.detectors.ensemble.lite_knn import BACKBONE_FILE, backbone_config
from worker.detectors.photo_crops import PhotoCropsNet
from worker.lab.ensemble.fitting import FitOptions, fit_ensemble

pytestmark = pytest.mark.model
SIZE = 64  # the 32-px scenes doubled: the Lite head then sees a 2x2 map


def doubled(images: np.ndarray) -> np.ndarray:
    return images.repeat(2, axis=1).repeat(2, axis=2)


@pytest.fixture(scope="module")
def photo_detector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A photo-crops detector folder with a random Lite0 backbone (what the member borrows)."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("tiny-photo")
    torch.manual_seed(0)
    network = PhotoCropsNet("tf_efficientnet_lite0", [7])
    save_file({key: value.contiguous() for key, value in network.state_dict().items()},
              str(folder / "model.safetensors"))
    manifest = {"name": "tiny-photo", "family": "photo-crops", "version": "photo-crops-tiny",
                "options": {"architecture": "tf_efficientnet_lite0", "stages": [7], "crop_size": 224, "grid": 2},
                "preprocessing": {"size": [224, 224], "mean": [0.5] * 3, "std": [0.5] * 3, "resample": "none"},
                "labels": ["real", "fake"], "thresholds": {"threshold": 0.65, "low": 0.35, "high": 0.65}}
    (folder / "fakescan.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture(scope="module")
def saved(photo_detector: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = backbone_config(str(photo_detector), load_settings())
    options = FitOptions(members=["lite-knn"], weights={"lite-knn": 1.0}, size=SIZE, progress=False,
                         member_config={"lite-knn": config})
    detector, _ = fit_ensemble(doubled(smooth_scenes(120, seed=0)), options)
    folder = tmp_path_factory.mktemp("oce-lite")
    detector.save(folder)
    return folder


def test_opt_in_member_is_left_out_of_the_default_set() -> None:
    assert "lite-knn" not in member_names() and "lite-knn" in member_names(opt_in=True)
    assert "lite-knn" not in parse_members(None)
    assert parse_members("colour-gmm,lite-knn") == ["colour-gmm", "lite-knn"]


def test_flags_planted_anomalies_and_reloads_with_identical_scores(saved: Path) -> None:
    normals, anomalies = doubled(smooth_scenes(40, seed=1)), doubled(planted_anomalies(40, seed=2))
    images, labels = np.concatenate([normals, anomalies]), np.r_[np.zeros(40), np.ones(40)]
    ref = ref_from_folder(saved)
    detector = load_detector(ref, load_settings())
    raw = detector.members["lite-knn"].score(FeatureBank(images))
    assert roc_auc_score(labels, raw) > 0.9
    scores, parts = detector.score_array(images)
    assert set(parts) == {"lite-knn"} and ((scores >= 0) & (scores <= 1)).all()
    again = load_detector(ref, load_settings()).score_array(images)[0]
    np.testing.assert_array_equal(scores, again)


def test_manifest_records_the_backbone_not_the_local_folder(saved: Path, photo_detector: Path) -> None:
    entry = ref_from_folder(saved).manifest["ensemble"]["members"][0]
    assert entry["config"]["backbone"] == {"source": str(photo_detector), "version": "photo-crops-tiny",
                                           "architecture": "tf_efficientnet_lite0"}
    assert sorted(entry["files"]) == sorted(["lite-knn.skops", BACKBONE_FILE])
    assert (saved / MEMBERS_DIR / BACKBONE_FILE).stat().st_size > 1_000_000  # the whole Lite0 backbone


def test_a_backbone_that_is_not_photo_crops_is_refused_before_reading_images(tmp_path: Path, capsys) -> None:
    code = main(["fit-ensemble", str(tmp_path / "nothing-here"), "--members", "lite-knn",
                 "--lite-backbone", "cifake", "--out", str(tmp_path / "out")])
    assert code != 0
    assert "--lite-backbone 'cifake' is a 'compact-cnn' detector" in capsys.readouterr().err
