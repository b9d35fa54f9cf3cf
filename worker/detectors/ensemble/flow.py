"""Member 2: a RealNVP-style normalizing flow over multi-scale edge features; score = -log-likelihood.

Affine coupling layers with alternating masks map the standardised features to a standard normal,
so the exact log-density of an image's edge statistics under the real images' distribution is
the base log-density plus the log-determinants of the couplings.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from worker.detectors.ensemble.features import FeatureBank
from worker.detectors.ensemble.members import register_member
from worker.detectors.ensemble.neural import Standardise, TorchMember, score_in_batches

# The edge histograms sum to one, so the features lie on a flat sheet; training noise keeps the
# flow from spending its capacity squeezing that direction to a point.
TRAINING_NOISE = 0.05


class AffineCoupling(nn.Module):
    mask: torch.Tensor  # a buffer

    def __init__(self, width: int, hidden: int, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)
        last = nn.Linear(hidden, 2 * width)
        nn.init.zeros_(last.weight)  # start as the identity map
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), last)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kept = x * self.mask
        log_scale, shift = self.net(kept).chunk(2, dim=1)
        log_scale = torch.tanh(log_scale) * (1 - self.mask)
        y = kept + (1 - self.mask) * (x * torch.exp(log_scale) + shift)
        return y, log_scale.sum(dim=1)


class EdgeFlow(nn.Module):
    def __init__(self, width: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.standardise = Standardise(width)
        checker = (torch.arange(width) % 2).float()
        self.couplings = nn.ModuleList(
            AffineCoupling(width, hidden, (checker if i % 2 == 0 else 1 - checker).clone()) for i in range(layers))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        log_det = torch.zeros(len(x), device=x.device)
        for coupling in self.couplings:
            x, step = coupling(x)
            log_det = log_det + step
        base = -0.5 * (x ** 2).sum(dim=1) - 0.5 * x.shape[1] * math.log(2 * math.pi)
        return base + log_det


@register_member("edge-flow")
class EdgeNormalizingFlow(TorchMember[EdgeFlow]):
    features = ("edges_multiscale",)
    summary = "RealNVP-style affine-coupling flow over multi-scale Sobel edge features; negative log-likelihood"
    epochs = 12
    lr = 1e-3

    def build(self) -> EdgeFlow:
        return EdgeFlow(self.config["width"], self.config.get("hidden", 64), self.config.get("layers", 6))

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        x = self.module.standardise(batch)
        return -self.module.log_prob(x + TRAINING_NOISE * torch.randn_like(x)).mean() / x.shape[1]

    def score(self, bank: FeatureBank) -> np.ndarray:
        return score_in_batches(lambda batch: -self.module.log_prob(self.module.standardise(batch)),
                                self.tensor(bank), self.device)
