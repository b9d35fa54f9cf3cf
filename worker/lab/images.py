"""Labelled sets as uint8 tensors at the network's input size, decoded once.

Small inputs (CIFAKE: 99k images at 32x32 ≈ 300 MB) are held in memory; sets too large for
``CACHE_BUDGET`` are decoded again per batch. Undecodable images are left out and counted, so one
bad file does not end a long run.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from fakescan.errors import DataError, UsageError
from worker.decode import DecodeError
from worker.detectors.base import Preprocessing
from worker.detectors.torch_classifier import resized_array
from worker.lab.data import LabelledItem, LabelledSet

log = logging.getLogger(__name__)
CACHE_BUDGET = 4 << 30  # bytes of decoded pixels held in memory


@dataclass
class ImageBank:
    """Decoded images (N, H, W, 3) uint8 with labels, in the set's sorted order."""

    labelled: LabelledSet
    preprocessing: Preprocessing
    items: list[LabelledItem]
    labels: torch.Tensor
    pixels: torch.Tensor | None = None  # held in memory when it fits the budget
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    def take(self, indices: torch.Tensor) -> torch.Tensor:
        if self.pixels is not None:
            return self.pixels[indices]
        chosen = [self.items[i] for i in indices.tolist()]
        return torch.from_numpy(np.stack([_decode(self.labelled, data, self.preprocessing)
                                          for data in self.labelled.read_many(chosen)]))

    def subset(self, indices: torch.Tensor) -> "ImageBank":
        pixels = self.pixels[indices] if self.pixels is not None else None
        return ImageBank(self.labelled, self.preprocessing, [self.items[i] for i in indices.tolist()],
                         self.labels[indices], pixels, self.skipped)


def _decode(labelled: LabelledSet, data: bytes, preprocessing: Preprocessing) -> np.ndarray:
    return resized_array(labelled.decode(data), preprocessing)


def load_bank(labelled: LabelledSet, preprocessing: Preprocessing, progress: bool = True) -> ImageBank:
    height, width = preprocessing.size
    in_memory = len(labelled.items) * height * width * 3 <= CACHE_BUDGET
    items, arrays, skipped = [], [], []
    if not in_memory:  # checked lazily per batch; a bad file then fails that batch loudly
        log.info("%d images at %dx%d exceed the in-memory budget; decoding per batch",
                 len(labelled.items), height, width)
        items = list(labelled.items)
    else:
        stream = labelled.read_many(labelled.items)
        for item, data in tqdm(zip(labelled.items, stream, strict=True), total=len(labelled.items), desc="decoding",
                               unit="img", disable=not progress, mininterval=2):
            try:
                arrays.append(_decode(labelled, data, preprocessing))
                items.append(item)
            except DecodeError as error:  # bad input is skipped and counted; anything else is a bug
                skipped.append(f"{item.key}: {error}")
    if skipped:
        log.warning("skipped %d undecodable images, e.g. %s", len(skipped), skipped[0])
    if not items:
        raise DataError(f"no decodable images in {labelled.source}")
    labels = torch.tensor([item.label for item in items], dtype=torch.long)
    pixels = torch.from_numpy(np.stack(arrays)) if in_memory else None
    return ImageBank(labelled, preprocessing, items, labels, pixels, skipped)


def validation_mask(items: list[LabelledItem], fraction: float) -> torch.Tensor:
    """True for items held out for validation, chosen by a hash of the key (stable as the set grows)."""
    cut = int(fraction * 10_000)
    return torch.tensor([int(hashlib.sha1(item.key.encode()).hexdigest()[:8], 16) % 10_000 < cut for item in items])


def split_validation(bank: ImageBank, fraction: float) -> tuple[ImageBank, ImageBank | None]:
    """The bank without, and with only, its validation items (``fraction`` 0: no validation)."""
    if fraction <= 0:
        return bank, None
    held = validation_mask(bank.items, fraction)
    if held.all() or not held.any():
        raise UsageError(f"--val-fraction {fraction} leaves no {'training' if held.all() else 'validation'} "
                         f"images out of {len(bank)}; use more data or another fraction (0 disables validation)")
    return bank.subset(torch.nonzero(~held).flatten()), bank.subset(torch.nonzero(held).flatten())
