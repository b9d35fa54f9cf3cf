"""The epoch loop that trains the TorchClassifier families (their recipes: :mod:`worker.lab.cnn`).

Deterministic for a seed on one device: seeded weights, seeded shuffling and augmentation,
deterministic kernels where torch has them, a hash-chosen validation split. After every epoch the
folder is rewritten (weights, then manifest), so a run stopped late still leaves a usable detector.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from fakescan.errors import DetectorError, UsageError
from fakescan.settings import Settings
from worker.detectors import detector_class
from worker.detectors.base import write_manifest
from worker.detectors.torch_classifier import (
    WEIGHTS,
    TorchClassifier,
    fake_probability,
    normalise,
    read_state_dict,
    scored_batch,
    weights_digest,
)
from worker.lab.config import Stage, TrainConfig
from worker.lab.data import LABELS, open_labelled
from worker.lab.images import ImageBank, load_bank, split_validation
from worker.lab.metrics import classification_metrics, threshold_for_macro_f1

log = logging.getLogger(__name__)


def decay_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weights, none on biases and normalisation parameters."""
    decay: list[nn.Parameter] = []
    plain: list[nn.Parameter] = []
    for parameter in module.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim > 1 else plain).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def one_stage(module: nn.Module, config: TrainConfig) -> list[Stage]:
    return [Stage("all", config.epochs)]


@dataclass(frozen=True)
class EpochPlan:
    """What the epoch loop needs to know of a family beyond its detector class (see :mod:`worker.lab.cnn`)."""

    threshold_objective: str = "fixed"  # "macro-f1": the threshold is chosen on the validation images
    class_weights: bool = False  # weight the loss by inverse class frequency unless --class-weights says otherwise
    parameter_groups: Callable[[nn.Module, float], list[dict[str, Any]]] = decay_groups
    # copies user-supplied backbone weights in and returns the names loaded; None: no backbone weights
    load_backbone: Callable[[nn.Module, dict[str, torch.Tensor]], list[str]] | None = None
    stages: Callable[[nn.Module, TrainConfig], list[Stage]] = one_stage  # staged fine-tuning: what trains when


@dataclass
class Run:
    """Everything one training run carries between epochs."""

    cls: type[TorchClassifier]
    plan: EpochPlan
    module: nn.Module
    config: TrainConfig
    train: ImageBank
    validation: ImageBank | None
    generator: torch.Generator
    manifest: dict[str, Any]
    out: Path
    progress: bool


def train_epochs(family: str, plan: EpochPlan, data: str, out: Path, config: TrainConfig, settings: Settings, *,
                 command: str = "", name: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Train a TorchClassifier family with the epoch loop, validate, choose the threshold, write the folder."""
    cls = detector_class(family)
    if not issubclass(cls, TorchClassifier):
        raise TypeError(f"the epoch loop trains TorchClassifier families; {family!r} is {cls.__qualname__}")
    options = cls.complete_options(config.options)
    preprocessing = cls.preprocessing_for(options)
    _make_deterministic(config)
    labelled = open_labelled(data, settings).limited(config.limit, config.seed)
    bank = load_bank(labelled, preprocessing, progress)
    train_bank, validation = split_validation(bank, config.val_fraction)
    module = cls.build_module(options)
    if config.backbone_weights:
        if plan.load_backbone is None:
            raise DetectorError(f"family {family!r} takes no backbone weights")
        loaded = plan.load_backbone(module, read_state_dict(local_file(config.backbone_weights, settings)))
        log.info("loaded %d backbone tensors from %s", len(loaded), config.backbone_weights)
    module.to(config.device)
    manifest = _manifest(cls, name or out.name, options, preprocessing.as_json(), labelled, bank, train_bank,
                         validation, config, command)
    run = Run(cls, plan, module, config, train_bank, validation, torch.Generator().manual_seed(config.seed),
              manifest, out, progress)
    started = time.monotonic()
    for stage in plan.stages(module, config):
        _train_stage(run, stage, started)
    _finish(run)
    return run.manifest


def _make_deterministic(config: TrainConfig) -> None:
    torch.manual_seed(config.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)  # a few CUDA kernels have no deterministic form
    if config.threads:
        torch.set_num_threads(config.threads)


def local_file(location: str, settings: Settings) -> Path:
    if not location.startswith("s3://"):
        path = Path(location).expanduser()
        if not path.is_file():
            raise UsageError(f"no such weights file: {location}")
        return path
    from fakescan.storage import open_store, parse_s3_uri

    bucket, key = parse_s3_uri(location)
    data = open_store(f"s3://{bucket}", settings).read(key, 4 << 30)
    target = Path(tempfile.mkdtemp(prefix="fakescan-weights-")) / Path(key).name
    target.write_bytes(data)
    return target


def _manifest(cls: type[TorchClassifier], name: str, options: dict[str, Any], preprocessing: dict[str, Any],
              labelled: Any, bank: ImageBank, train_bank: ImageBank, validation: ImageBank | None,
              config: TrainConfig, command: str) -> dict[str, Any]:
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("options", "device", "precision")}
    return {
        "name": name, "family": cls.family, "version": "", "options": options, "preprocessing": preprocessing,
        "labels": list(LABELS), "thresholds": {"threshold": 0.5, "low": None, "high": None},
        "training": {
            "command": command, "data": labelled.source, "data_fingerprint": labelled.fingerprint(),
            "counts": labelled.counts(), "skipped_undecodable": len(bank.skipped),
            "train_images": len(train_bank), "validation_images": len(validation) if validation else 0,
            "config": settings, "torch": torch.__version__, "epochs_completed": 0, "history": [],
        },
    }


def _train_stage(run: Run, stage: Stage, started: float) -> None:
    config = run.config
    trainable = set(map(id, stage.parameters(run.module))) if stage.parameters else None
    for parameter in run.module.parameters():
        parameter.requires_grad_(trainable is None or id(parameter) in trainable)
    optimiser = torch.optim.AdamW(run.plan.parameter_groups(run.module, config.weight_decay), lr=stage.lr or config.lr)
    steps = max(1, -(-len(run.train) // config.batch_size)) * stage.epochs
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=stage.lr or config.lr, total_steps=steps,
                                                   pct_start=0.25)
    balance = run.plan.class_weights if config.class_weights is None else config.class_weights
    weights = _class_weights(run.train.labels) if balance else None
    for epoch in range(stage.epochs):
        loss, accuracy = _train_epoch(run, optimiser, schedule, weights, f"{stage.name} {epoch + 1}/{stage.epochs}")
        record = {"stage": stage.name, "epoch": epoch + 1, "train_loss": loss, "train_accuracy": accuracy,
                  "seconds": round(time.monotonic() - started, 1), **_validation_summary(run)}
        run.manifest["training"]["history"].append(record)
        run.manifest["training"]["epochs_completed"] += 1
        tqdm.write(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
        write_detector(run.cls, run.module, run.manifest, run.out)


def _class_weights(labels: torch.Tensor) -> torch.Tensor:
    counts = torch.bincount(labels, minlength=2).float().clamp_min(1)
    return counts.sum() / (2 * counts)


def _train_epoch(run: Run, optimiser: torch.optim.Optimizer, schedule: Any, weights: torch.Tensor | None,
                 label: str) -> tuple[float, float]:
    run.module.train()
    order = torch.randperm(len(run.train), generator=run.generator)
    batches = order.split(run.config.batch_size)
    total_loss, correct, seen = 0.0, 0, 0
    with tqdm(batches, desc=f"epoch {label}", unit="batch", disable=not run.progress, mininterval=5) as bar:
        for indices in bar:
            images = normalise(run.train.take(indices).to(run.config.device), run.train.preprocessing)
            if run.config.augment:
                images = augment(images, run.generator)
            targets = run.train.labels[indices].to(run.config.device)
            logits = run.module(images)
            loss = classification_loss(logits, targets, run.config.label_smoothing, weights)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            total_loss += loss.item() * len(indices)
            correct += int(((fake_probability(logits.detach()) >= 0.5).long() == targets).sum())
            seen += len(indices)
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.4f}", refresh=False)
    return total_loss / seen, correct / seen


def classification_loss(logits: torch.Tensor, targets: torch.Tensor, smoothing: float,
                        weights: torch.Tensor | None) -> torch.Tensor:
    if logits.shape[-1] == 2:
        return F.cross_entropy(logits, targets, weight=None if weights is None else weights.to(logits.device),
                               label_smoothing=smoothing)
    soft = targets.float() * (1 - smoothing) + smoothing / 2
    positive = None if weights is None else (weights[1] / weights[0]).to(logits.device)
    return F.binary_cross_entropy_with_logits(logits[:, 0], soft, pos_weight=positive)


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and shifts of up to 1/8 of the side (reflection padded)."""
    count, _, height, width = images.shape
    flip = torch.rand(count, generator=generator) < 0.5
    images = torch.where(flip.view(-1, 1, 1, 1).to(images.device), images.flip(3), images)
    pad = max(1, min(height, width) // 8)
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    offsets = torch.randint(0, 2 * pad + 1, (count, 2), generator=generator).tolist()
    return torch.stack([padded[i, :, dy:dy + height, dx:dx + width] for i, (dy, dx) in enumerate(offsets)])


@torch.inference_mode()
def bank_scores(module: nn.Module, bank: ImageBank, device: str, flip_average: bool = False,
                batch_size: int = 256) -> torch.Tensor:
    """Scores as the trained detector will give them (the same test-time flip averaging)."""
    module.eval()
    scores = [scored_batch(module, normalise(bank.take(indices).to(device), bank.preprocessing), flip_average).cpu()
              for indices in torch.arange(len(bank)).split(batch_size)]
    return torch.cat(scores)


def _flip_average(run: Run) -> bool:
    return bool(run.manifest["options"].get("flip_average"))


def _validation_summary(run: Run) -> dict[str, Any]:
    if run.validation is None:
        return {}
    scores = bank_scores(run.module, run.validation, run.config.device, _flip_average(run)).tolist()
    metrics = classification_metrics(run.validation.labels.tolist(), scores)
    return {"val_accuracy": metrics["accuracy"], "val_roc_auc": metrics["roc_auc"]}


@torch.no_grad()
def refresh_batchnorm(module: nn.Module, bank: ImageBank, device: str, batch_size: int,
                      max_images: int = 25_600) -> None:
    """Recompute BatchNorm running statistics as plain averages over (un-augmented) training images.

    The running averages kept during training lag behind the weights; on short runs they are far
    enough off to shift every score while leaving the ranking intact. One pass fixes that.
    """
    norms = [layer for layer in module.modules() if isinstance(layer, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average
    module.train()
    # a seeded sample of the whole set: the bank is sorted by key, so its head may be one class only
    chosen = torch.randperm(len(bank), generator=torch.Generator().manual_seed(0))[:max_images]
    for indices in chosen.split(batch_size):
        module(normalise(bank.take(indices).to(device), bank.preprocessing))
    for layer, momentum in zip(norms, momenta, strict=True):
        layer.momentum = momentum
    module.eval()


def _finish(run: Run) -> None:
    refresh_batchnorm(run.module, run.train, run.config.device, run.config.batch_size)
    threshold = 0.5
    if run.validation is not None:
        labels = run.validation.labels.tolist()
        scores = bank_scores(run.module, run.validation, run.config.device, _flip_average(run)).tolist()
        if run.plan.threshold_objective == "macro-f1" and len(set(labels)) == 2:
            threshold = threshold_for_macro_f1(labels, scores)
        run.manifest["training"]["validation_metrics"] = classification_metrics(labels, scores, threshold)
    run.manifest["thresholds"] = {"threshold": threshold, "low": None, "high": None}
    write_detector(run.cls, run.module, run.manifest, run.out)


def write_detector(cls: type[TorchClassifier], module: nn.Module, manifest: dict[str, Any], folder: Path) -> str:
    """Weights first, then the manifest naming their hash; each file replaced atomically."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().cpu().contiguous() for key, value in module.state_dict().items()}
    partial = folder / f".{WEIGHTS}.partial"
    save_file(state, str(partial), metadata={"family": cls.family})
    # scores depend on the weights and on test-time flip averaging; results are keyed by the version
    flip = "-flip" if (manifest.get("options") or {}).get("flip_average") else ""
    manifest["version"] = f"{cls.family}-{weights_digest(partial)[:10]}{flip}"
    os.replace(partial, folder / WEIGHTS)
    write_manifest(manifest, folder)
    return manifest["version"]
