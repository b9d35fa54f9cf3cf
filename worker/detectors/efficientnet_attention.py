"""EfficientNet with spatial attention (model card), 128x128 input.

torchvision EfficientNet (b0 by default) features → BatchNorm → 1x1-conv attention branch
(256 → 128 → 128 → 1, sigmoid) multiplying the features → attention-weighted pooling
(sum of weighted features over sum of attention) → Dropout(0.5) → Dense(64, ReLU, L2 as weight
decay on that layer) → Dropout(0.25) → 2-way softmax. The attention map is the explanation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from worker.detectors import register_family
from worker.detectors.base import Preprocessing
from worker.detectors.mobilenet_v2 import IMAGENET_MEAN, IMAGENET_STD
from worker.detectors.overlays import scale_maps
from worker.detectors.torch_classifier import TorchClassifier

VARIANTS = ("b0", "b1", "b2", "b3")


def attention_branch(channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width_in, width_out in zip((channels, 256, 128), (256, 128, 128), strict=True):
        layers += [nn.Conv2d(width_in, width_out, 1), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.Conv2d(128, 1, 1), nn.Sigmoid())


class EfficientNetAttention(nn.Module):
    def __init__(self, variant: str, dense: int, dense_weight_decay: float) -> None:
        import torchvision.models as models

        super().__init__()
        network = getattr(models, f"efficientnet_{variant}")(weights=None)
        channels = network.classifier[1].in_features
        self.backbone = network.features
        self.norm = nn.BatchNorm2d(channels)
        self.attention = attention_branch(channels)
        self.dense = nn.Sequential(nn.Dropout(0.5), nn.Linear(channels, dense), nn.ReLU(inplace=True),
                                   nn.Dropout(0.25))
        self.head = nn.Linear(dense, 2)
        self.dense_weight_decay = dense_weight_decay  # read by the trainer's parameter groups

    def features_and_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.norm(self.backbone(x))
        return features, self.attention(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features, attention = self.features_and_attention(x)
        pooled = (features * attention).sum(dim=(2, 3)) / attention.sum(dim=(2, 3)).clamp_min(1e-6)
        return self.head(self.dense(pooled))


@register_family("efficientnet-attention")
class EfficientNetAttentionDetector(TorchClassifier):
    module: EfficientNetAttention
    @classmethod
    def default_options(cls) -> dict[str, Any]:
        return {"variant": "b0", "dense": 64, "dense_weight_decay": 1e-2, "input_size": 128}

    @classmethod
    def build_module(cls, options: dict[str, Any]) -> nn.Module:
        from fakescan.errors import DetectorError

        if options["variant"] not in VARIANTS:
            raise DetectorError(f"unknown EfficientNet variant {options['variant']!r}; known: {', '.join(VARIANTS)}")
        return EfficientNetAttention(str(options["variant"]), int(options["dense"]),
                                     float(options["dense_weight_decay"]))

    @classmethod
    def preprocessing_for(cls, options: dict[str, Any]) -> Preprocessing:
        size = int(options["input_size"])
        return Preprocessing((size, size), IMAGENET_MEAN, IMAGENET_STD, "bicubic")

    def explanation_maps(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            _features, attention = self.module.features_and_attention(batch)
        return {"attention": scale_maps(attention[:, 0].float())}
