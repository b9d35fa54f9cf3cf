"""Member 3: Deep SVDD, a small ResNet encoder trained to pull real images towards one centre.

The score is the squared distance of an image's embedding to that centre. Following Ruff et al.
(2018), the network has no bias terms and its batch norms no affine shift, so it cannot map every
input to the centre trivially. Besides the standardised RGB the encoder sees the image's Laplacian
residual, the band where generators leave most of their traces.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from worker.detectors.ensemble.features import FeatureBank
from worker.detectors.ensemble.members import FitContext, register_member
from worker.detectors.ensemble.neural import Standardise, TorchMember, score_in_batches

LAPLACIAN = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]])


def plain_norm(channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels, affine=False)


def residual_block(inputs: int, outputs: int, stride: int) -> nn.Module:
    from torchvision.models.resnet import BasicBlock

    downsample = None
    if stride != 1 or inputs != outputs:
        downsample = nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False), plain_norm(outputs))
    return BasicBlock(inputs, outputs, stride, downsample, norm_layer=plain_norm)


class SVDDEncoder(nn.Module):
    def __init__(self, size: int, width: int, embedding: int) -> None:
        super().__init__()
        self.size = size
        self.standardise = Standardise(6)
        self.register_buffer("laplacian", LAPLACIAN.expand(3, 1, 3, 3).clone())
        self.register_buffer("centre", torch.zeros(embedding))
        self.stem = nn.Sequential(nn.Conv2d(6, width, 3, 1, 1, bias=False), plain_norm(width), nn.ReLU())
        self.body = nn.Sequential(residual_block(width, width, 1), residual_block(width, 2 * width, 2),
                                  residual_block(2 * width, 4 * width, 2))
        self.head = nn.Linear(4 * width, embedding, bias=False)

    def channels(self, flat: torch.Tensor) -> torch.Tensor:
        """RGB plus its Laplacian residual, (n, 6, h, w), before standardisation."""
        rgb = flat.view(len(flat), 3, self.size, self.size)
        residual = F.conv2d(F.pad(rgb, (1, 1, 1, 1), mode="replicate"), self.laplacian, groups=3)
        return torch.cat([rgb, residual], dim=1)

    def forward(self, flat: torch.Tensor) -> torch.Tensor:
        x = self.channels(flat)
        x = (x - self.standardise.mean.view(1, -1, 1, 1)) / self.standardise.std.view(1, -1, 1, 1)
        return self.head(self.body(self.stem(x)).mean(dim=(2, 3)))

    def distance(self, flat: torch.Tensor) -> torch.Tensor:
        return ((self(flat) - self.centre) ** 2).sum(dim=1)


@register_member("deep-svdd")
class DeepSVDD(TorchMember):
    features = ("pixels",)
    summary = "Deep SVDD: small bias-free ResNet encoder, distance to the real images' centre"
    epochs = 4  # more epochs tighten the sphere around the training images themselves (seen on CIFAKE)
    lr = 1e-3

    def build(self) -> nn.Module:
        return SVDDEncoder(self.config["size"], self.config.get("channels", 16), self.config.get("embedding", 32))

    def prepare(self, inputs: torch.Tensor, context: FitContext) -> None:
        super().prepare(inputs, context)
        self.config.setdefault("size", int(round((inputs.shape[1] / 3) ** 0.5)))

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        images = batch.view(len(batch), 3, self.module.size, self.module.size)
        flip = torch.rand(len(batch), 1, 1, 1, device=batch.device) < 0.5  # mirror images are just as real
        return self.module.distance(torch.where(flip, images.flip(3), images).reshape(len(batch), -1)).mean()

    @torch.no_grad()
    def initialise(self, inputs: torch.Tensor) -> None:
        """Channel statistics, then the centre: the mean embedding of the untrained network."""
        sample = inputs[:2048]
        channels = self.module.channels(sample).transpose(0, 1).reshape(6, -1).T
        self.module.standardise.set_from(channels)
        self.module.eval()
        centre = torch.cat([self.module(sample[i:i + 256]) for i in range(0, len(sample), 256)]).mean(dim=0)
        # coordinates too close to zero are trivially matched by zero weights: push them away
        centre[(centre.abs() < 0.01) & (centre < 0)] = -0.01
        centre[(centre.abs() < 0.01) & (centre >= 0)] = 0.01
        self.module.centre.copy_(centre)

    def score(self, bank: FeatureBank) -> np.ndarray:
        return score_in_batches(self.module.distance, self.tensor(bank), self.device)
