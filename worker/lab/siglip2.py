"""Fine-tune SigLIP2 from a checkpoint you provide, unfreezing it progressively in three stages.

As the model card describes: (1) the head alone, lr 1e-3, 2 epochs; (2) the head and the top six
transformer blocks, lr 5e-5, 3 epochs; (3) everything, lr 1e-5, 2 epochs. Each stage gets a fresh
AdamW and a cosine schedule over its own steps; the loss is cross-entropy; training images are
flipped, rotated by up to 10 degrees and colour-jittered (torchvision.transforms.v2). Stage epochs
and learning rates are family options; "top six" is clamped to the model's depth.

Labelled data comes through :mod:`worker.lab.data` and :mod:`worker.lab.images` like
every family's. The base is any checkpoint folder, ``s3://`` prefix or named detector holding a
fixed-resolution SigLIP(2) model: a bare ``SiglipModel`` gets a fresh real/fake head, a classifier
whose two labels already mean real and fake keeps its head. The output folder is a Hugging Face
checkpoint plus ``fakescan.json``, rewritten after every stage. Same seed, same data, same device:
same weights.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from fakescan import catalog
from fakescan.errors import DetectorError, UsageError
from fakescan.settings import Settings
from worker.detectors.device import autocast
from worker.detectors.hf_classifier import fake_label_indices, load_checkpoint, quiet_transformers
from worker.detectors.siglip2 import Siglip2Detector, check_architecture, preprocessing_of
from worker.detectors.torch_classifier import normalise
from worker.lab.config import Stage, TrainConfig
from worker.lab.data import LABELS, open_labelled
from worker.lab.images import ImageBank, load_bank, split_validation
from worker.lab.metrics import classification_metrics
from worker.lab.recipes import recipe
from worker.lab.trainer import decay_groups

log = logging.getLogger(__name__)

STAGE_DEFAULTS: dict[str, int | float] = {
    "head_epochs": 2, "head_lr": 1e-3,
    "top_epochs": 3, "top_lr": 5e-5, "top_blocks": 6,
    "full_epochs": 2, "full_lr": 1e-5,
}


def encoder_blocks(model: Any) -> nn.ModuleList:  # model: a transformers SigLIP classifier
    return model.vision_model.encoder.layers


def head_parameters(model: Any) -> list[nn.Parameter]:
    return list(model.classifier.parameters())


def top_block_parameters(model: Any, blocks: int) -> list[nn.Parameter]:
    """The head, the final layer norm and the last ``blocks`` encoder blocks (clamped to the depth)."""
    layers = encoder_blocks(model)
    chosen = list(layers)[len(layers) - min(max(blocks, 0), len(layers)):]
    return head_parameters(model) + list(model.vision_model.post_layernorm.parameters()) + [
        parameter for layer in chosen for parameter in layer.parameters()]


def set_trainable(model: nn.Module, parameters: Iterable[nn.Parameter] | None) -> int:
    """Freeze everything but ``parameters`` (None: train everything); returns how many tensors train."""
    wanted = None if parameters is None else set(map(id, parameters))
    count = 0
    for parameter in model.parameters():
        parameter.requires_grad_(wanted is None or id(parameter) in wanted)
        count += parameter.requires_grad
    return count


def training_stages(options: dict[str, Any]) -> list[Stage]:
    """The three unfreezing stages, with any option overrides (an epoch count of 0 skips a stage)."""
    unknown = sorted(set(options) - set(STAGE_DEFAULTS))
    if unknown:
        raise UsageError(f"family 'siglip2' has no option {', '.join(unknown)}; known: {', '.join(STAGE_DEFAULTS)}")
    values = {**STAGE_DEFAULTS, **options}
    for key, value in values.items():
        bad = not isinstance(value, (int, float)) or value < 0 or (key.endswith("_lr") and value == 0)
        if bad or (not key.endswith("_lr") and value != int(value)):
            wanted = "positive number" if key.endswith("_lr") else "whole number >= 0"
            raise UsageError(f"--option {key} must be a {wanted}")
    return [
        Stage("head", int(values["head_epochs"]), head_parameters, float(values["head_lr"])),
        Stage("top-blocks", int(values["top_epochs"]), partial(top_block_parameters, blocks=int(values["top_blocks"])),
              float(values["top_lr"])),
        Stage("full", int(values["full_epochs"]), None, float(values["full_lr"])),
    ]


def augmentation() -> Callable[[torch.Tensor], torch.Tensor]:
    """Per-image random flip, rotation within ±10° and colour jitter of a uint8 (3, H, W) tensor."""
    from torchvision.transforms import InterpolationMode, v2

    return v2.Compose([
        v2.RandomHorizontalFlip(),
        v2.RandomRotation(10, interpolation=InterpolationMode.BILINEAR),
        v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02),
    ])


def has_real_fake_head(config: Any) -> bool:
    """A two-class image classifier whose labels already say which class is fake."""
    if config.num_labels != 2 or not any(a.endswith("ForImageClassification") for a in config.architectures or []):
        return False
    try:
        return len(fake_label_indices(config.id2label)) == 1
    except DetectorError:
        return False


def load_base(spec: str, settings: Settings) -> tuple[Any, Any, catalog.DetectorRef]:
    """The base model (fresh real/fake head unless it has one) and processor, from a folder, s3:// or a name."""
    from transformers import AutoConfig

    ref = catalog.resolve(spec, settings)
    folder = catalog.local_folder(ref, settings)
    if folder is None or not (folder / "config.json").is_file():
        raise UsageError(f"base {spec!r} is not a Hugging Face checkpoint (no config.json)")
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    overrides: dict[str, Any] = {}
    if not has_real_fake_head(config):
        overrides = {"num_labels": 2, "id2label": dict(enumerate(LABELS)),
                     "label2id": {label: index for index, label in enumerate(LABELS)}, "ignore_mismatched_sizes": True}
    with quiet_transformers():  # its load report lists every text-tower tensor a bare SiglipModel leaves unused
        model, processor = load_checkpoint(folder, **overrides)
    check_architecture(model)
    log.info("base %s (%s): %s", spec, ref.version,
             "fresh real/fake head" if overrides else f"keeps its head {model.config.id2label}")
    return model, processor, ref


def class_indices(detector: Siglip2Detector) -> torch.Tensor:
    """Maps a data label (0 real, 1 fake) to the checkpoint's class index."""
    fake = detector.fake_indices[0]
    return torch.tensor([1 - fake, fake])


def train_epoch(detector: Siglip2Detector, bank: ImageBank, optimiser: torch.optim.Optimizer, schedule: Any,
                config: TrainConfig, generator: torch.Generator, description: str, progress: bool) -> dict[str, float]:
    model, targets_of = detector.model.train(), class_indices(detector)
    augment = augmentation() if config.augment else None
    scaler = torch.amp.GradScaler("cuda", enabled=detector.device.startswith("cuda") and config.precision == "fp16")
    total, correct, seen = 0.0, 0, 0
    batches = torch.randperm(len(bank), generator=generator).split(config.batch_size)
    for indices in tqdm(batches, desc=description, unit="batch", disable=not progress, mininterval=5):
        images = bank.take(indices).permute(0, 3, 1, 2)
        if augment is not None:
            images = torch.stack([augment(image) for image in images])
        pixels = normalise(images.permute(0, 2, 3, 1).contiguous(), bank.preprocessing).to(detector.device)
        targets = targets_of[bank.labels[indices]].to(detector.device)
        with autocast(detector.device, config.precision):
            logits = model(pixel_values=pixels).logits.float()
        loss = F.cross_entropy(logits, targets, label_smoothing=config.label_smoothing)
        optimiser.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimiser)
        scaler.update()
        schedule.step()
        total += loss.item() * len(indices)
        correct += int((logits.argmax(-1) == targets).sum())
        seen += len(indices)
    return {"train_loss": total / seen, "train_accuracy": correct / seen}


@torch.inference_mode()
def bank_scores(detector: Siglip2Detector, bank: ImageBank, batch_size: int, precision: str) -> list[float]:
    detector.model.eval()
    scores: list[float] = []
    for indices in torch.arange(len(bank)).split(batch_size):
        pixels = normalise(bank.take(indices), bank.preprocessing).to(detector.device)
        with autocast(detector.device, precision):
            scores += detector.fake_probabilities(detector.model(pixel_values=pixels).logits).cpu().tolist()
    return scores


def run_stage(detector: Siglip2Detector, stage: Stage, train_bank: ImageBank, validation: ImageBank | None,
              config: TrainConfig, generator: torch.Generator, progress: bool) -> dict[str, Any]:
    """Train one stage; returns its record (what trained, and per-epoch history)."""
    model = detector.model
    trainable = set_trainable(model, stage.parameters(model) if stage.parameters else None)
    record: dict[str, Any] = {"name": stage.name, "epochs": stage.epochs, "lr": stage.lr,
                              "trainable_tensors": trainable, "history": []}
    if stage.name == "top-blocks":
        record["blocks"] = sum(1 for layer in encoder_blocks(model) if next(layer.parameters()).requires_grad)
    if stage.epochs == 0:
        return record
    lr = config.lr if stage.lr is None else stage.lr
    optimiser = torch.optim.AdamW(decay_groups(model, config.weight_decay), lr=lr)
    steps = -(-len(train_bank) // config.batch_size) * stage.epochs
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=steps)
    for epoch in range(1, stage.epochs + 1):
        summary = train_epoch(detector, train_bank, optimiser, schedule, config, generator,
                              f"{stage.name} {epoch}/{stage.epochs}", progress)
        if validation is not None:
            scores = bank_scores(detector, validation, config.batch_size, config.precision)
            metrics = classification_metrics(validation.labels.tolist(), scores)
            summary.update(val_accuracy=metrics["accuracy"], val_roc_auc=metrics["roc_auc"])
        record["history"].append({"epoch": epoch, **summary})
        log.info("siglip2 %s epoch %d/%d %s", stage.name, epoch, stage.epochs, summary)
    return record


def fine_tune_detector(data: str, out: Path, config: TrainConfig, settings: Settings, command: str = "",
                       name: str | None = None, progress: bool = True) -> Siglip2Detector:
    if not config.backbone_weights:
        raise UsageError("family 'siglip2' fine-tunes a checkpoint you provide: "
                         "give its folder or s3:// prefix as the base")
    stages = training_stages(config.options)
    torch.manual_seed(config.seed)  # the fresh head, shuffling and augmentation all draw from it
    if config.threads:
        torch.set_num_threads(config.threads)
    model, processor, base = load_base(config.backbone_weights, settings)
    # fp32 weights to train (placed at bf16 on a CPU they would be cast); the epochs autocast at config.precision
    detector = Siglip2Detector(name or out.name, "", {"thresholds": {"threshold": 0.5}}, model, processor,
                               config.device, "fp32")
    labelled = open_labelled(data, settings).limited(config.limit, config.seed)
    bank = load_bank(labelled, preprocessing_of(processor), progress)
    train_bank, validation = split_validation(bank, config.val_fraction)
    detector.manifest.update(preprocessing=bank.preprocessing.as_json(), training={
        "command": command, "base": config.backbone_weights, "base_version": base.version, "data": labelled.source,
        "data_fingerprint": labelled.fingerprint(), "counts": labelled.counts(),
        "skipped_undecodable": len(bank.skipped),
        "train_images": len(train_bank), "validation_images": len(validation) if validation else 0,
        "config": {k: v for k, v in asdict(config).items() if k not in ("options", "backbone_weights", "epochs", "lr")},
        "stages": [], "torch": torch.__version__, "transformers": _transformers_version(),
    })
    generator = torch.Generator().manual_seed(config.seed)
    started = time.monotonic()
    for number, stage in enumerate(stages, start=1):
        record = run_stage(detector, stage, train_bank, validation, config, generator, progress)
        detector.manifest["training"]["stages"].append({**record, "seconds": round(time.monotonic() - started, 1)})
        if number < len(stages):  # a run stopped later still leaves a usable detector
            detector.save(out)
    if validation is not None:
        detector.manifest["training"]["validation_metrics"] = classification_metrics(
            validation.labels.tolist(), bank_scores(detector, validation, config.batch_size, config.precision))
    detector.save(out)
    set_trainable(detector.model, [])
    detector.model.eval()
    return detector


@recipe("siglip2")
def fine_tune(data: str, out: Path, config: TrainConfig, settings: Settings, *, command: str = "",
              name: str | None = None, progress: bool = True) -> dict[str, Any]:
    """``fakescan train siglip2``: the staged fine-tuning; returns the manifest."""
    return fine_tune_detector(data, out, config, settings, command, name, progress).manifest


def _transformers_version() -> str:
    import transformers

    return transformers.__version__
