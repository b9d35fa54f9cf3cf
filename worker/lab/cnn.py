"""Recipes of the CNN families: the epoch loop of :mod:`worker.lab.trainer` with each family's training choices.

What a family's network is and how it scores belongs to its detector module; how it is trained
(threshold objective, class weighting, weight-decay groups, which backbone weights it accepts)
is the lab's, and lives here. A new TorchClassifier family trains once it has a line below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from fakescan.errors import DetectorError
from fakescan.settings import Settings
from worker.detectors.efficientnet_attention import EfficientNetAttention
from worker.lab.config import TrainConfig
from worker.lab.recipes import recipe
from worker.lab.trainer import EpochPlan, decay_groups, train_epochs


def torchvision_backbone(module: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """A torchvision ImageNet checkpoint's ``features.*`` (or our own ``backbone.*``) into ``module.backbone``."""
    return load_prefixed(module.get_submodule("backbone"), state, ("features.", "backbone."))


def dense_l2_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """efficientnet-attention: the Dense(64) kernel carries the model card's L2 penalty; the rest the usual decay."""
    if not isinstance(module, EfficientNetAttention):
        raise TypeError(f"expected the EfficientNetAttention this family builds, got {type(module).__name__}")
    dense_weight = module.get_parameter("dense.1.weight")
    groups = decay_groups(module, weight_decay)
    groups[0]["params"] = [p for p in groups[0]["params"] if p is not dense_weight]
    if dense_weight.requires_grad:
        groups.append({"params": [dense_weight], "weight_decay": module.dense_weight_decay})
    return groups


def load_prefixed(target: nn.Module, state: dict[str, torch.Tensor], prefixes: Sequence[str]) -> list[str]:
    """Load the tensors whose names start with one of ``prefixes`` (stripped) into ``target``, completely."""
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        if prefix is not None:
            renamed[key[len(prefix):]] = value
    if not renamed:
        raise DetectorError(f"no backbone tensors in the weights (expected names starting with {', '.join(prefixes)})")
    try:
        missing, _unexpected = target.load_state_dict(renamed, strict=False)
    except RuntimeError as error:
        raise DetectorError(f"backbone weights do not fit: {str(error).splitlines()[0]}") from None
    if missing:
        raise DetectorError(f"backbone weights lack {len(missing)} tensors, e.g. {missing[0]}")
    return sorted(renamed)


PLANS = {
    "compact-cnn": EpochPlan(),
    "mobilenet-v2": EpochPlan(threshold_objective="macro-f1", class_weights=True,
                              load_backbone=torchvision_backbone),
    "efficientnet-attention": EpochPlan(parameter_groups=dense_l2_groups, load_backbone=torchvision_backbone),
}


def _register(family: str, plan: EpochPlan) -> None:
    def train_family(data: str, out: Path, config: TrainConfig, settings: Settings, *, command: str = "",
                     name: str | None = None, progress: bool = True) -> dict[str, Any]:
        return train_epochs(family, plan, data, out, config, settings, command=command, name=name, progress=progress)

    train_family.__qualname__ = f"train_epochs[{family}]"
    recipe(family)(train_family)


for _family, _plan in PLANS.items():
    _register(_family, _plan)
