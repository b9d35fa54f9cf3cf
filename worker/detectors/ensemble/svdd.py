"""Member 3: Deep SVDD, a small ResNet encoder trained to pull real images towards one centre.

The score is the squared distance of an image's embedding to that centre. Following Ruff et al.
(2018), the network has no bias terms and its batch norms no affine shift, so it cannot map every
input to the centre trivially. Besides the standardised RGB the encoder sees the image's Laplacian
residual, the band where generators leave most of their traces. Given a ``backbone`` config
(``fit-ensemble --svdd-backbone``), the encoder is a pretrained vision tower instead: see
:mod:`.svdd_backbone`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from worker.detectors.ensemble.features import FeatureBank
from worker.detectors.ensemble.members import FitContext, register_member
from worker.detectors.ensemble.neural import (
    SCORE_BATCH,
    Standardise,
    TorchMember,
    load_state,
    score_in_batches,
    train_minibatches,
)
from worker.detectors.ensemble.svdd_backbone import (
    BACKBONE_DIR,
    STATISTICS_IMAGES,
    TOWER_BATCH,
    BackboneEncoder,
    build_encoder,
    load_tower,
    mirrored_features,
    save_encoder,
    unfreeze_top_blocks,
)

LAPLACIAN = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]])
EMBEDDING = 32


def plain_norm(channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels, affine=False)


def residual_block(inputs: int, outputs: int, stride: int) -> nn.Module:
    from torchvision.models.resnet import BasicBlock

    downsample = None
    if stride != 1 or inputs != outputs:
        downsample = nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False), plain_norm(outputs))
    return BasicBlock(inputs, outputs, stride, downsample, norm_layer=plain_norm)


def centre_of(embeddings: torch.Tensor) -> torch.Tensor:
    """The mean embedding of the untrained network, each coordinate at least 0.01 away from zero."""
    centre = embeddings.mean(dim=0)
    # coordinates too close to zero are trivially matched by zero weights: push them away
    centre[(centre.abs() < 0.01) & (centre < 0)] = -0.01
    centre[(centre.abs() < 0.01) & (centre >= 0)] = 0.01
    return centre


class SVDDEncoder(nn.Module):
    batch_size = SCORE_BATCH
    laplacian: torch.Tensor  # buffers, saved with the weights
    centre: torch.Tensor

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
class DeepSVDD(TorchMember[SVDDEncoder | BackboneEncoder]):
    features = ("pixels",)
    summary = "Deep SVDD: small bias-free ResNet encoder, distance to the real images' centre"
    epochs = 4  # more epochs tighten the sphere around the training images themselves (seen on CIFAKE)
    lr = 1e-3

    def build(self) -> SVDDEncoder:
        config = self.config
        return SVDDEncoder(config["size"], config.get("channels", 16), config.get("embedding", EMBEDDING))

    def prepare(self, inputs: torch.Tensor, context: FitContext) -> None:
        super().prepare(inputs, context)
        self.config.setdefault("size", int(round((inputs.shape[1] / 3) ** 0.5)))

    def fit(self, bank: FeatureBank, context: FitContext) -> None:
        if "backbone" in self.config:
            self.fit_from_backbone(bank, context)
        else:
            super().fit(bank, context)

    def fit_from_backbone(self, bank: FeatureBank, context: FitContext) -> None:
        """The pretrained tower plus a fresh projection; the tower stays frozen unless blocks are asked for."""
        inputs = self.tensor(bank)
        self.prepare(inputs, context)
        backbone = self.config["backbone"] = dict(self.config["backbone"])  # the caller's options stay as given
        folder = Path(backbone.pop("folder", backbone["source"]))  # a local copy: not part of the record
        torch.manual_seed(context.seed)
        encoder, record = build_encoder(folder, self.config["size"], self.config.setdefault("embedding", EMBEDDING))
        backbone.update(record, blocks=unfreeze_top_blocks(encoder, int(backbone.get("blocks", 0))))
        self.module = encoder.to(context.device)
        features = mirrored_features(encoder, inputs[:STATISTICS_IMAGES] if backbone["blocks"] else inputs,
                                     context.device, context.progress)
        with torch.no_grad():
            encoder.head.standardise.set_from(features)
            encoder.centre.copy_(centre_of(encoder.head.embed(features.to(context.device))))
        epochs = int(self.config.setdefault("epochs", self.epochs))
        if backbone["blocks"]:
            loss = train_minibatches(encoder, inputs, self.loss, context, epochs, self.lr, self.name, TOWER_BATCH)
        else:
            loss = train_minibatches(encoder.head.projection, features,
                                     lambda batch: encoder.feature_distance(batch).mean(), context, epochs, self.lr,
                                     self.name)
        self.config["final_loss"] = loss

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        images = batch.view(len(batch), 3, self.module.size, self.module.size)
        flip = torch.rand(len(batch), 1, 1, 1, device=batch.device) < 0.5  # mirror images are just as real
        return self.module.distance(torch.where(flip, images.flip(3), images).reshape(len(batch), -1)).mean()

    @torch.no_grad()
    def initialise(self, inputs: torch.Tensor) -> None:
        """Channel statistics, then the centre: the mean embedding of the untrained network."""
        encoder = self.module
        if not isinstance(encoder, SVDDEncoder):  # a backbone's statistics are set in fit_from_backbone
            raise TypeError(f"initialise is for the small encoder, not {type(encoder).__name__}")
        sample = inputs[:2048]
        channels = encoder.channels(sample).transpose(0, 1).reshape(6, -1).T
        encoder.standardise.set_from(channels)
        encoder.eval()
        encoder.centre.copy_(centre_of(torch.cat([encoder(sample[i:i + 256]) for i in range(0, len(sample), 256)])))

    def score(self, bank: FeatureBank) -> np.ndarray:
        return score_in_batches(self.module.distance, self.tensor(bank), self.device, self.module.batch_size)

    def save(self, folder: Path) -> list[str]:
        if isinstance(self.module, BackboneEncoder):
            return save_encoder(self.module, folder, self.name)
        return super().save(folder)

    @classmethod
    def load(cls, folder: Path, config: dict[str, Any], device: str) -> Self:
        if "backbone" not in config:
            return super().load(folder, config, device)
        member = cls(config)
        member.device = device
        encoder = BackboneEncoder(load_tower(folder / BACKBONE_DIR), config["size"], config["embedding"])
        load_state(encoder.head, folder / f"{cls.name}.safetensors")
        member.module = encoder.to(device).eval()
        return member
