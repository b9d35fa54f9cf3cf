"""SigLIP2 family: staged fine-tuning from a provided checkpoint (disk or S3), saving and loading."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
import torch

from fakescan import catalog
from fakescan.errors import DetectorError, UsageError
from fakescan.settings import load_settings
from tests.tiny_models import build_tiny_siglip_checkpoint, tiny_images, write_labelled_folder
from worker.detectors import load_detector
from worker.detectors.siglip2 import Siglip2Detector, file_digest
from worker.lab.config import TrainConfig
from worker.lab.recipes import recipe_for
from worker.lab.siglip2 import fine_tune, fine_tune_detector, load_base, set_trainable, training_stages

pytestmark = pytest.mark.model

DEPTH = 8  # deeper than the six "top blocks", so stage 2 leaves the bottom two frozen
QUICK_STAGES = {"head_epochs": 1, "head_lr": 1e-2, "top_epochs": 1, "top_lr": 1e-3, "full_epochs": 1, "full_lr": 1e-4}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bare image-text SigLIP model, as the published google/siglip2-base-patch16-224 is."""
    return build_tiny_siglip_checkpoint(tmp_path_factory.mktemp("base") / "siglip2-tiny", layers=DEPTH, head=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_labelled_folder(tmp_path_factory.mktemp("data"), per_class=8)


def config(base: str, **changes: object) -> TrainConfig:
    values = {"batch_size": 4, "seed": 0, "val_fraction": 0.0, "label_smoothing": 0.0, "backbone_weights": base,
              "options": dict(QUICK_STAGES), "threads": 1}
    return TrainConfig(**{**values, **changes})


def vision_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def changed(before: dict[str, torch.Tensor], model: torch.nn.Module) -> set[str]:
    after = model.state_dict()
    return {name for name, tensor in before.items() if not torch.equal(tensor, after[name])}


def test_stages_unfreeze_head_then_top_blocks_then_everything(base: Path) -> None:
    model, _, _ = load_base(str(base), load_settings())
    head, top, full = training_stages({})
    assert [(s.name, s.epochs, s.lr) for s in (head, top, full)] == [
        ("head", 2, 1e-3), ("top-blocks", 3, 5e-5), ("full", 2, 1e-5)]

    def trainable() -> set[str]:
        return {name for name, parameter in model.named_parameters() if parameter.requires_grad}

    set_trainable(model, head.parameters(model))
    assert trainable() == {"classifier.weight", "classifier.bias"}
    set_trainable(model, top.parameters(model))
    blocks = {name.split(".")[3] for name in trainable() if name.startswith("vision_model.encoder.layers.")}
    assert blocks == {str(i) for i in range(DEPTH - 6, DEPTH)}
    assert {"classifier.weight", "vision_model.post_layernorm.weight"} <= trainable()
    assert not any(name.startswith("vision_model.embeddings") for name in trainable())
    set_trainable(model, None)
    assert trainable() == {name for name, _ in model.named_parameters()}


def test_top_blocks_clamp_to_a_shallow_model(tmp_path: Path) -> None:
    shallow = build_tiny_siglip_checkpoint(tmp_path / "shallow", layers=2)
    model, _, _ = load_base(str(shallow), load_settings())
    set_trainable(model, training_stages({"top_blocks": 6})[1].parameters(model))
    trained = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert {name.split(".")[3] for name in trained if ".layers." in name} == {"0", "1"}
    assert not any("embeddings" in name for name in trained)


def test_stage_options_are_checked() -> None:
    with pytest.raises(UsageError, match="no option head_epoch; known: head_epochs"):
        training_stages({"head_epoch": 1})
    with pytest.raises(UsageError, match="top_lr must be a positive number"):
        training_stages({"top_lr": 0})
    with pytest.raises(UsageError, match="full_epochs must be a whole number"):
        training_stages({"full_epochs": 1.5})


def test_training_at_bf16_keeps_fp32_weights(base: Path, data: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16 on a CPU casts a scan's weights; a fine-tune autocasts instead and trains (and saves) fp32."""
    from safetensors import safe_open

    from worker.detectors import device

    monkeypatch.setattr(device, "cpu_runs_bf16", lambda: True)
    head_only = {**QUICK_STAGES, "top_epochs": 0, "full_epochs": 0}
    detector = fine_tune_detector(str(data), tmp_path / "head", config(str(base), options=head_only, precision="bf16"),
                                  load_settings(), progress=False)
    assert {p.dtype for p in detector.model.parameters()} == {torch.float32}
    with safe_open(str(tmp_path / "head" / "model.safetensors"), "pt") as saved:
        assert {saved.get_slice(name).get_dtype() for name in saved.keys()} == {"F32"}


def test_frozen_parameters_do_not_move(base: Path, data: Path, tmp_path: Path) -> None:
    settings = load_settings()
    start = vision_state(load_base(str(base), settings)[0])
    head_only = {**QUICK_STAGES, "top_epochs": 0, "full_epochs": 0}
    detector = fine_tune_detector(str(data), tmp_path / "head", config(str(base), options=head_only), settings,
                                  progress=False)
    moved = changed({k: v for k, v in start.items() if not k.startswith("classifier")}, detector.model)
    assert moved == set()
    top_only = {**QUICK_STAGES, "head_epochs": 0, "full_epochs": 0}
    detector = fine_tune_detector(str(data), tmp_path / "top", config(str(base), options=top_only), settings,
                                  progress=False)
    moved = changed({k: v for k, v in start.items() if not k.startswith("classifier")}, detector.model)
    assert any(".layers.7." in name for name in moved) and any("post_layernorm" in name for name in moved)
    assert not any(".layers.0." in name or ".layers.1." in name or "embeddings" in name for name in moved)


def test_three_stages_write_a_detector_that_loads_back_identically(base: Path, data: Path, tmp_path: Path) -> None:
    settings = load_settings()
    out = tmp_path / "siglip2-det"
    detector = fine_tune_detector(str(data), out, config(str(base), val_fraction=0.25), settings, name="sg",
                                  progress=False)
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "fakescan.json"} <= {
        p.name for p in out.iterdir()}
    manifest = json.loads((out / "fakescan.json").read_text())
    assert manifest["family"] == "siglip2" and manifest["name"] == "sg" and manifest["labels"] == ["real", "fake"]
    assert manifest["version"] == f"siglip2-{file_digest(out / 'model.safetensors')[:12]}"
    training = manifest["training"]
    assert [(s["name"], s["epochs"], len(s["history"])) for s in training["stages"]] == [
        ("head", 1, 1), ("top-blocks", 1, 1), ("full", 1, 1)]
    assert training["stages"][1]["blocks"] == 6
    counts = [s["trainable_tensors"] for s in training["stages"]]
    assert counts[0] == 2 and counts[0] < counts[1] < counts[2]
    assert training["data_fingerprint"].startswith("sha256:") and training["counts"] == {"real": 8, "fake": 8}
    assert training["validation_images"] > 0 and "accuracy" in training["validation_metrics"]
    assert manifest["preprocessing"]["size"] == [32, 32]

    images = tiny_images(5, seed=9)
    loaded = load_detector(catalog.resolve(str(out), settings), settings)
    assert isinstance(loaded, Siglip2Detector) and loaded.version == manifest["version"]
    assert [p.score for p in loaded.predict(images)] == [p.score for p in detector.predict(images)]

    again = fine_tune(str(data), tmp_path / "again", config(str(base), val_fraction=0.25), settings, progress=False)
    assert again["version"] == manifest["version"]  # same seed, same data: same weights
    other_seed = fine_tune(str(data), tmp_path / "seed1", config(str(base), seed=1), settings, progress=False)
    assert other_seed["version"] != manifest["version"]


def test_fine_tunes_from_s3_base_and_data_like_from_disk(base: Path, data: Path, tmp_path: Path, s3_service,
                                                         s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKESCAN_S3_ENDPOINT_URL", s3_service.url)
    settings = load_settings()
    client = boto3.client("s3", endpoint_url=s3_service.url)
    for root, prefix in ((base, "models/siglip2-tiny"), (data, "train")):
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            client.upload_file(str(path), s3_bucket, f"{prefix}/{path.relative_to(root).as_posix()}")
    from_s3 = fine_tune(f"s3://{s3_bucket}/train", tmp_path / "s3", config(f"s3://{s3_bucket}/models/siglip2-tiny"),
                        settings, progress=False)
    recipe = recipe_for("siglip2")  # what `fakescan train siglip2` runs
    from_disk = recipe(str(data), tmp_path / "disk", config(str(base)), settings, progress=False)
    assert from_s3["training"]["base"].startswith("s3://") and from_s3["training"]["data"].startswith("s3://")
    assert from_s3["version"] == from_disk["version"]

    for path in sorted((tmp_path / "s3").iterdir()):
        client.upload_file(str(path), s3_bucket, f"detectors/sg/{path.name}")
    ref = catalog.resolve(f"s3://{s3_bucket}/detectors/sg", settings)
    assert (ref.family, ref.version) == ("siglip2", from_s3["version"])
    images = tiny_images(4, seed=5)
    remote = load_detector(ref, settings)
    local = load_detector(catalog.resolve(str(tmp_path / "disk"), settings), settings)
    assert [p.score for p in remote.predict(images)] == [p.score for p in local.predict(images)]


def test_a_base_with_a_real_fake_head_keeps_it(tmp_path: Path) -> None:
    labelled = build_tiny_siglip_checkpoint(tmp_path / "clf", labels=("Fake", "Real"), seed=4)
    model, _, _ = load_base(str(labelled), load_settings())
    reference, _, _ = load_base(str(labelled), load_settings())
    assert model.config.id2label == {0: "Fake", 1: "Real"}
    assert torch.equal(model.classifier.weight, reference.classifier.weight)


def test_bad_bases_are_refused(tmp_path: Path, data: Path) -> None:
    settings = load_settings()
    with pytest.raises(UsageError, match="fine-tunes a checkpoint you provide"):
        fine_tune(str(data), tmp_path / "x", config(""), settings, progress=False)
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    vit = tmp_path / "vit"
    ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, intermediate_size=37)).save_pretrained(vit)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(vit)
    with pytest.raises(DetectorError, match="got ViTForImageClassification"):
        load_base(str(vit), settings)


def test_train_command_fine_tunes_siglip2_from_base(base: Path, data: Path, tmp_path: Path) -> None:
    """The user's path: `fakescan train siglip2 DATA --base CHECKPOINT --out DIR`, then use DIR."""
    from fakescan.cli import main

    out = tmp_path / "siglip2-cli"
    options = [part for key, value in QUICK_STAGES.items() for part in ("--option", f"{key}={value}")]
    code = main(["train", "siglip2", str(data), "--base", str(base), "--out", str(out), "--batch-size", "4",
                 "--val-fraction", "0", "--threads", "1", "--no-progress", *options])
    assert code == 0
    manifest = json.loads((out / "fakescan.json").read_text())
    assert manifest["family"] == "siglip2" and manifest["version"].startswith("siglip2-")
    assert [stage["name"] for stage in manifest["training"]["stages"]] == ["head", "top-blocks", "full"]
    detector = load_detector(catalog.resolve(str(out), load_settings()), load_settings())
    scores = [p.score for p in detector.predict(tiny_images(3, seed=5))]
    assert all(0.0 <= s <= 1.0 for s in scores)
