"""What ``fakescan train`` hands a family's recipe (:mod:`worker.lab.recipes`), and the stages of a run.

A TorchClassifier family provides only what its network is: ``build_module(options)`` and
``preprocessing_for(options)``. How it trains (threshold objective, class weighting, weight-decay
groups, backbone weights, stages) is an :class:`~worker.lab.trainer.EpochPlan` in
:mod:`worker.lab.cnn`; a family with a schedule of its own registers its own recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 3e-3  # peak learning rate of the one-cycle schedule
    weight_decay: float = 5e-4
    label_smoothing: float = 0.05
    seed: int = 0
    val_fraction: float = 0.1
    augment: bool = True  # random horizontal flip + small translation
    class_weights: bool | None = None  # weight the loss by inverse class frequency; None: the family's choice
    options: dict[str, Any] = field(default_factory=dict)  # family architecture options
    backbone_weights: str | None = None  # local path or s3:// URI: safetensors or torchvision .pth
    limit: int | None = None  # use at most this many training items (balanced), for pilots
    device: str = "cpu"
    precision: str = "fp32"
    threads: int | None = None
    groups: str | None = None  # CSV:COLUMN naming each image's group (e.g. its source) for held-out calibration


@dataclass(frozen=True)
class Stage:
    """A slice of the training run. ``parameters`` picks what trains (None: everything)."""

    name: str
    epochs: int
    parameters: Callable[["nn.Module"], Iterable["nn.Parameter"]] | None = None
    lr: float | None = None  # peak learning rate for this stage; None: TrainConfig.lr
