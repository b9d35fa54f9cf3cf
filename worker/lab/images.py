"""Labelled sets decoded once at a model's input size: tensors for training (:class:`ImageBank`), and
numpy arrays at the one-class ensemble's working size (:func:`load_array`).

Small inputs (CIFAKE: 99k images at 32x32 ≈ 300 MB) are held in memory; sets too large for
``CACHE_BUDGET`` are decoded again per batch. Undecodable images are left out and counted, so one
bad file does not end a long run.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
from tqdm import tqdm

from fakescan.decode import DecodeError
from fakescan.errors import DataError, UsageError
from worker.detectors.base import Preprocessing
from worker.detectors.torch_classifier import resized_array
from worker.lab.data import LabelledItem, LabelledSet

if TYPE_CHECKING:
    from PIL import Image

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
        return torch.from_numpy(np.stack([resized_array(self.labelled.decode(data), self.preprocessing)
                                          for data in self.labelled.read_many(chosen)]))

    def subset(self, indices: torch.Tensor) -> "ImageBank":
        pixels = self.pixels[indices] if self.pixels is not None else None
        return ImageBank(self.labelled, self.preprocessing, [self.items[i] for i in indices.tolist()],
                         self.labels[indices], pixels, self.skipped)


def decode_all(labelled: LabelledSet, size: tuple[int, int], prepare: Callable[[Image.Image], np.ndarray],
               progress: bool = True) -> tuple[np.ndarray, list[LabelledItem], list[str]]:
    """Every item decoded by the scan's decoder and prepared as a uint8 (h, w, 3) array, in one (n, h, w, 3)
    array; also the items kept and the reasons of the undecodable images, which are left out."""
    height, width = size
    array = np.empty((len(labelled.items), height, width, 3), dtype=np.uint8)
    kept: list[LabelledItem] = []
    skipped: list[str] = []
    stream = zip(labelled.items, labelled.read_many(labelled.items), strict=True)
    for item, data in tqdm(stream, total=len(labelled.items), desc="decoding", unit="img", disable=not progress,
                           mininterval=2):
        try:
            image = labelled.decode(data)
        except DecodeError as error:  # bad input is skipped and counted; anything else is a bug
            skipped.append(f"{item.key}: {error}")
            continue
        array[len(kept)] = prepare(image)
        kept.append(item)
    if skipped:
        log.warning("skipped %d undecodable images, e.g. %s", len(skipped), skipped[0])
    return array[:len(kept)], kept, skipped


def load_bank(labelled: LabelledSet, preprocessing: Preprocessing, progress: bool = True) -> ImageBank:
    height, width = preprocessing.size
    if len(labelled.items) * height * width * 3 > CACHE_BUDGET:  # checked lazily per batch; a bad file fails it
        log.info("%d images at %dx%d exceed the in-memory budget; decoding per batch",
                 len(labelled.items), height, width)
        items, pixels, skipped = list(labelled.items), None, list[str]()
    else:
        array, items, skipped = decode_all(labelled, preprocessing.size,
                                           lambda image: resized_array(image, preprocessing), progress)
        pixels = torch.from_numpy(array)
    if not items:
        raise DataError(f"no decodable images in {labelled.source}")
    labels = torch.tensor([item.label for item in items], dtype=torch.long)
    return ImageBank(labelled, preprocessing, items, labels, pixels, skipped)


def load_array(labelled: LabelledSet, size: int, progress: bool = True) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The set at the one-class ensemble's working size (antialiased resize to size x size): a uint8
    (n, size, size, 3) array, its labels (1 = fake) and the skip reasons of undecodable images."""
    from worker.detectors.ensemble.features import to_array

    array, kept, skipped = decode_all(labelled, (size, size), lambda image: to_array([image], size)[0], progress)
    return array, np.array([item.label for item in kept], dtype=np.int64), skipped


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
