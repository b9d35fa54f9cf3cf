"""MobileNetV2 (model card): torchvision backbone → global average pooling → Dense(ReLU) → Dropout → sigmoid.

224x224 input, ImageNet normalisation. Training weights the loss by inverse class frequency and
picks the decision threshold by macro F1 on the validation split. The backbone starts from
scratch unless ``--backbone-weights`` gives a torchvision checkpoint (nothing is downloaded).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from worker.detectors import register_family
from worker.detectors.base import Preprocessing
from worker.detectors.overlays import grad_cam
from worker.detectors.torch_classifier import TorchClassifier

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class MobileNetV2Classifier(nn.Module):
    def __init__(self, hidden: int, dropout: float, width_mult: float) -> None:
        from torchvision.models import mobilenet_v2

        super().__init__()
        self.backbone = mobilenet_v2(weights=None, width_mult=width_mult).features
        channels = self.backbone[-1].out_channels
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.hidden = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(self.pool(self.backbone(x)).flatten(1)))


@register_family("mobilenet-v2")
class MobileNetV2Detector(TorchClassifier):
    module: MobileNetV2Classifier

    @classmethod
    def default_options(cls) -> dict[str, Any]:
        return {"hidden": 128, "dropout": 0.3, "width_mult": 1.0, "input_size": 224}

    @classmethod
    def build_module(cls, options: dict[str, Any]) -> nn.Module:
        return MobileNetV2Classifier(int(options["hidden"]), float(options["dropout"]), float(options["width_mult"]))

    @classmethod
    def preprocessing_for(cls, options: dict[str, Any]) -> Preprocessing:
        size = int(options["input_size"])
        return Preprocessing((size, size), IMAGENET_MEAN, IMAGENET_STD, "bilinear")

    def explanation_maps(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        maps = grad_cam(self.module, self.module.backbone[-1], batch)
        return {f"gradcam-{name}": heat for name, heat in maps.items()}
