"""Deep SVDD started from a user-provided backbone: a tiny SigLIP tower from a folder or S3, saved, reloaded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import boto3
import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from fakescan.catalog import ref_from_folder
from fakescan.settings import load_settings
from tests.model.ensemble_images import probe_set, smooth_scenes
from tests.tiny_models import build_tiny_siglip_checkpoint, build_tiny_siglip_vision_checkpoint
from worker.detectors import load_detector
from worker.detectors.ensemble.detector import MEMBERS_DIR, OneClassEnsemble, fitted_state_hash
from worker.detectors.ensemble.features import FeatureBank
from worker.detectors.ensemble.svdd_backbone import normalisation
from worker.lab.ensemble.fitting import FitOptions, fit_ensemble

pytestmark = pytest.mark.model

BACKBONE_FILES = ["deep-svdd.safetensors", "deep-svdd-backbone/config.json", "deep-svdd-backbone/model.safetensors"]


def fit_svdd(backbone: dict) -> OneClassEnsemble:
    options = FitOptions(members=["deep-svdd"], weights={"deep-svdd": 1.0}, progress=False,
                         member_config={"deep-svdd": {"epochs": 4, "backbone": backbone}})
    return fit_ensemble(smooth_scenes(100, seed=0), options)[0]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bare image-text SigLIP model, as google/siglip2-base-patch16-224 is, at the working size (32)."""
    return build_tiny_siglip_checkpoint(tmp_path_factory.mktemp("base") / "siglip-tiny", head=False)


@pytest.fixture(scope="module")
def fitted(base: Path) -> OneClassEnsemble:
    return fit_svdd({"source": str(base)})


@pytest.fixture(scope="module")
def saved(fitted: OneClassEnsemble, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("oce")
    fitted.save(folder)
    return folder


def test_member_records_the_backbone_it_started_from(fitted: OneClassEnsemble, base: Path) -> None:
    config = fitted.members["deep-svdd"].config
    assert config["backbone"] == {
        "source": str(base), "blocks": 0, "model_type": "siglip", "tower": "SiglipVisionModel", "image_size": 32,
        "hidden_size": 32, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
        "pooling": "mean of the final patch tokens"}
    assert config["embedding"] == 32 and config["final_loss"] > 0


def test_planted_anomalies_score_above_held_out_normals(fitted: OneClassEnsemble) -> None:
    # The tower is random (seed 0): its features happen to separate the planted grid and colours.
    # Other random towers do less well (seed 3 gives AUC 0.64), so this checks the plumbing keeps
    # the signal, not that any backbone would.
    images, labels = probe_set()
    raw = fitted.members["deep-svdd"].score(FeatureBank(images))
    assert roc_auc_score(labels, raw) > 0.85
    assert np.median(raw[labels == 1]) > np.quantile(raw[labels == 0], 0.9)


def test_saved_backbone_reloads_with_identical_scores(fitted: OneClassEnsemble, saved: Path) -> None:
    manifest = json.loads((saved / "fakescan.json").read_text())
    (entry,) = manifest["ensemble"]["members"]
    assert entry["files"] == BACKBONE_FILES
    on_disk = sorted(path.relative_to(saved / MEMBERS_DIR).as_posix()
                     for path in (saved / MEMBERS_DIR).rglob("*") if path.is_file())
    assert on_disk == sorted(BACKBONE_FILES)  # every file written is hashed into the version
    tower_config = json.loads((saved / MEMBERS_DIR / "deep-svdd-backbone" / "config.json").read_text())
    assert tower_config["model_type"] == "siglip_vision_model" and tower_config["vision_use_head"] is False
    assert entry["config"]["backbone"]["model_type"] == "siglip" and "folder" not in entry["config"]["backbone"]

    reloaded = load_detector(ref_from_folder(saved), load_settings())
    images, _ = probe_set()
    before, before_parts = fitted.score_array(images)
    after, after_parts = reloaded.score_array(images)
    np.testing.assert_array_equal(before, after)
    np.testing.assert_array_equal(before_parts["deep-svdd"], after_parts["deep-svdd"])
    bank = FeatureBank(images)
    np.testing.assert_array_equal(fitted.members["deep-svdd"].score(bank), reloaded.members["deep-svdd"].score(bank))


@pytest.mark.parametrize("name", ["deep-svdd-backbone/config.json", "deep-svdd-backbone/model.safetensors"])
def test_version_covers_the_backbone_files(saved: Path, tmp_path: Path, name: str) -> None:
    folder = Path(shutil.copytree(saved, tmp_path / "copy"))
    section = json.loads((folder / "fakescan.json").read_text())["ensemble"]
    assert fitted_state_hash(folder, section) == ref_from_folder(saved).version
    with (folder / MEMBERS_DIR / name).open("ab") as handle:
        handle.write(b" ")
    assert fitted_state_hash(folder, section) != ref_from_folder(saved).version


def test_normalisation_from_the_processor_config_else_its_defaults(tmp_path: Path) -> None:
    tower = build_tiny_siglip_vision_checkpoint(tmp_path / "tower")
    assert normalisation(tower) == ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])  # SiglipImageProcessor's defaults
    (tower / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.4, 0.45, 0.5], "image_std": 0.25}))
    assert normalisation(tower) == ([0.4, 0.45, 0.5], [0.25, 0.25, 0.25])


def test_top_blocks_fine_tune_weight_matrices_only_and_reload(tmp_path: Path) -> None:
    """A bare vision tower at 48 px (the 32 px images are resized up), its top block fine-tuned."""
    from safetensors.torch import load_file

    tower = build_tiny_siglip_vision_checkpoint(tmp_path / "tower", image_size=48, layers=2)
    detector = fit_svdd({"source": str(tower), "blocks": 1})
    assert detector.members["deep-svdd"].config["backbone"]["blocks"] == 1
    detector.save(tmp_path / "oce")
    start = load_file(str(tower / "model.safetensors"))
    tuned = load_file(str(tmp_path / "oce" / MEMBERS_DIR / "deep-svdd-backbone" / "model.safetensors"))
    assert set(tuned) == {name for name in start if not name.startswith("head.")}
    moved = {name for name in tuned if not torch.equal(start[name], tuned[name])}
    assert moved and all(name.startswith("encoder.layers.1.") and name.endswith(".weight") for name in moved)
    assert not any("layer_norm" in name for name in moved)  # norms (and every bias) stay frozen

    reloaded = load_detector(ref_from_folder(tmp_path / "oce"), load_settings())
    images, _ = probe_set(10)
    np.testing.assert_array_equal(detector.score_array(images)[0], reloaded.score_array(images)[0])


def write_real_images(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i, image in enumerate(smooth_scenes(60, seed=3)):
        Image.fromarray(image).save(folder / f"{i}.png")
    return folder


def test_fit_from_an_s3_backbone_matches_the_same_folder(base: Path, tmp_path: Path, s3_service, s3_bucket: str,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The user's path: `fakescan fit-ensemble DATA --out DIR --svdd-backbone s3://...`, then scan with DIR."""
    from fakescan.cli import main

    monkeypatch.setenv("FAKESCAN_S3_ENDPOINT_URL", s3_service.url)
    client = boto3.client("s3", endpoint_url=s3_service.url)
    for path in sorted(base.iterdir()):
        client.upload_file(str(path), s3_bucket, f"models/siglip-tiny/{path.name}")
    data = write_real_images(tmp_path / "data")
    outputs = {}
    for where, location in (("s3", f"s3://{s3_bucket}/models/siglip-tiny"), ("disk", str(base))):
        outputs[where] = tmp_path / where
        code = main(["fit-ensemble", str(data), "--out", str(outputs[where]), "--members", "deep-svdd",
                     "--svdd-backbone", location, "--no-progress"])
        assert code == 0, capsys.readouterr().err
    manifests = {where: json.loads((out / "fakescan.json").read_text()) for where, out in outputs.items()}
    assert manifests["s3"]["ensemble"]["members"][0]["config"]["backbone"]["source"].startswith("s3://")
    weights = "members/deep-svdd-backbone/model.safetensors"
    assert (outputs["s3"] / weights).read_bytes() == (outputs["disk"] / weights).read_bytes()
    settings = load_settings()
    images, _ = probe_set(10)
    scores = {where: load_detector(ref_from_folder(out), settings).score_array(images)[0]
              for where, out in outputs.items()}
    np.testing.assert_array_equal(scores["s3"], scores["disk"])

    code = main(["fit-ensemble", str(data), "--out", str(tmp_path / "x"), "--svdd-backbone",
                 f"s3://{s3_bucket}/models/nothing-here"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--svdd-backbone s3://" in err


def vit_checkpoint(folder: Path) -> Path:
    from transformers import ViTConfig, ViTModel

    ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=37)).save_pretrained(folder)
    return folder


def pickled_siglip(folder: Path, base: Path) -> Path:
    folder.mkdir()
    shutil.copy(base / "config.json", folder / "config.json")
    (folder / "pytorch_model.bin").write_bytes(b"not loaded")
    return folder


@pytest.mark.parametrize("case, code, message", [
    ("missing", 2, "--svdd-backbone {location}: no Hugging Face checkpoint there"),
    ("vit", 6, "cannot start from a 'vit' checkpoint"),
    ("pickle", 6, "pytorch_model.bin is pickled and is not loaded"),
    ("no-member", 2, "--svdd-backbone needs the deep-svdd member"),
])
def test_bad_backbone_is_a_one_line_error_before_any_image_is_read(
        case: str, code: int, message: str, base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fakescan.cli import main

    location = {"missing": lambda: tmp_path / "no-such-model", "vit": lambda: vit_checkpoint(tmp_path / "vit"),
                "pickle": lambda: pickled_siglip(tmp_path / "pickled", base), "no-member": lambda: base}[case]()
    members = "colour-gmm" if case == "no-member" else "deep-svdd"
    capsys.readouterr()
    # the data folder does not exist: the backbone is checked first
    exit_code = main(["fit-ensemble", str(tmp_path / "no-data"), "--out", str(tmp_path / "out"), "--members",
                      members, "--svdd-backbone", str(location)])
    err = capsys.readouterr().err
    assert exit_code == code, err
    assert err.count("\n") == 1 and message.format(location=location) in err
    if case == "vit":
        assert "supported: fixed-resolution SigLIP / SigLIP2 vision towers" in err


@pytest.mark.parametrize("options, message", [
    (["--svdd-backbone-blocks", "1"], "--svdd-backbone-blocks needs --svdd-backbone"),
    (["--svdd-backbone", "BASE", "--svdd-backbone-blocks", "-1"], "--svdd-backbone-blocks -1: give 0"),
])
def test_backbone_blocks_are_checked(options: list[str], message: str, base: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    from fakescan.cli import main

    options = [str(base) if option == "BASE" else option for option in options]
    exit_code = main(["fit-ensemble", str(tmp_path / "no-data"), "--out", str(tmp_path / "out"), *options])
    err = capsys.readouterr().err
    assert exit_code == 2 and err.count("\n") == 1 and message in err
