"""Photo-scale detector: frozen EfficientNet-Lite statistics of native-resolution crops, a linear head.

A photo is never squeezed to a thumbnail. Up to ``grid``² squares of ``crop_size`` pixels are cut
at the image's own pixel scale on an even grid (an image smaller than a crop is judged whole, as
it is); each goes through an ImageNet EfficientNet-Lite (timm's architecture, weights shipped in
the detector folder); every stage's output is summarised by its per-channel mean and standard
deviation (early stages carry a generator's pixel statistics, late ones the content); a
standardised linear head gives each crop a logit, and the image's score is the sigmoid of the
mean crop logit. The crop scores are the explanation overlay: which part of the photo looked made.

Scores are calibrated for moderation onto the verdict policy's scale: the recipe finds the raw
probabilities ``band = (low, high)`` that flag 10% and 2% of held-out real photos, and the
detector maps them monotonically (piecewise linear) onto the policy's ``low``/``high`` (0.35 and
0.65), so its own verdict, the ``uncertain`` band and the combined verdict all read one scale.
The band is a buffer in the weights, so recalibrating changes the version.

The head is fitted by :mod:`worker.lab.photo_crops` (a logistic probe, as UnivFD does on
foundation features); nothing here trains.
"""

from __future__ import annotations

import math
from typing import Any, Sequence, cast

import numpy as np
import torch
from PIL import Image
from torch import nn

from fakescan.errors import DetectorError
from fakescan.verdicts import VerdictPolicy
from worker.detectors import register_family
from worker.detectors.base import FULL_RESOLUTION, InputNeed, Prediction, Preprocessing
from worker.detectors.device import autocast, to_device
from worker.detectors.torch_classifier import TorchClassifier, normalise

ARCHITECTURES = ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2")
LITE_MEAN = LITE_STD = (0.5, 0.5, 0.5)  # the Lite models were trained on pixels scaled to [-1, 1]
POLICY_BAND = (VerdictPolicy.low, VerdictPolicy.high)  # where calibrated scores put low and high


def crop_boxes(width: int, height: int, size: int, grid: int) -> list[tuple[int, int, int, int]]:
    """``grid`` x ``grid`` squares of ``size`` (or the short side, when smaller) spread evenly over
    the image, corners included; duplicates dropped. Offsets are multiples of 8 where possible, so
    crops of a JPEG stay on its 8x8 block grid."""
    side = min(size, width, height)
    boxes: list[tuple[int, int, int, int]] = []
    for top in _offsets(height - side, grid):
        for left in _offsets(width - side, grid):
            box = (left, top, left + side, top + side)
            if box not in boxes:
                boxes.append(box)
    return boxes


def _offsets(slack: int, grid: int) -> list[int]:
    if grid == 1:
        return [slack // 2 // 8 * 8]
    return [round(slack * index / (grid - 1)) // 8 * 8 if index < grid - 1 else slack for index in range(grid)]


def image_crops(image: Image.Image, size: int, grid: int) -> tuple[list[np.ndarray], list[tuple[int, int, int, int]]]:
    """The crops of an RGB image as uint8 (side, side, 3) arrays, with their boxes."""
    boxes = crop_boxes(image.width, image.height, size, grid)
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    # crop first: copying the whole photo into one array cost 50-115 ms per 2-12 MP photo
    return [np.asarray(rgb.crop(box), dtype=np.uint8) for box in boxes], boxes


class StageStatistics(nn.Module):
    """EfficientNet-Lite stages → per-channel mean and standard deviation of the chosen stages.

    Stage indices: 0-6 are the seven block stages, 7 the 1x1 head convolution."""

    backbone: Any  # a timm EfficientNet (untyped)

    def __init__(self, architecture: str, stages: Sequence[int]) -> None:
        import timm

        super().__init__()
        if architecture not in ARCHITECTURES:
            raise DetectorError(f"unknown backbone {architecture!r}; known: {', '.join(ARCHITECTURES)}")
        self.backbone = timm.create_model(architecture, pretrained=False, num_classes=0)
        self.stages = sorted(int(stage) for stage in stages)
        if not self.stages or self.stages[0] < 0 or self.stages[-1] > len(self.backbone.blocks):
            raise DetectorError(f"stages must be in 0..{len(self.backbone.blocks)}, got {list(stages)}")

    def widths(self) -> list[int]:
        widths = [stage[-1].conv_pwl.out_channels if hasattr(stage[-1], "conv_pwl") else stage[-1].conv_pw.out_channels
                  for stage in self.backbone.blocks] + [self.backbone.num_features]
        return [widths[stage] for stage in self.stages]

    def dimension(self) -> int:
        return 2 * sum(self.widths())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        backbone = self.backbone
        x = backbone.bn1(backbone.conv_stem(x))
        outputs = []
        for index, stage in enumerate(backbone.blocks):
            if index > self.stages[-1]:
                break
            x = stage(x)
            outputs.append(x)
        if self.stages[-1] == len(backbone.blocks):
            outputs.append(backbone.bn2(backbone.conv_head(x)))
        summary = []
        for stage in self.stages:
            flat = outputs[stage].flatten(2)
            summary += [flat.mean(dim=2), flat.std(dim=2, unbiased=False)]
        return torch.cat(summary, dim=1)


class PhotoCropsNet(nn.Module):
    """Crop batch → one logit per crop (N, 1): standardised stage statistics into a linear head."""

    feature_mean: torch.Tensor
    feature_scale: torch.Tensor
    band: torch.Tensor

    def __init__(self, architecture: str, stages: Sequence[int]) -> None:
        super().__init__()
        self.features = StageStatistics(architecture, stages)
        dimension = self.features.dimension()
        self.register_buffer("feature_mean", torch.zeros(dimension))
        self.register_buffer("feature_scale", torch.ones(dimension))
        self.register_buffer("band", torch.tensor(POLICY_BAND, dtype=torch.float64))  # identity until calibrated
        self.head = nn.Linear(dimension, 1)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.head((features - self.feature_mean) / self.feature_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))


@register_family("photo-crops")
class PhotoCropsDetector(TorchClassifier):
    predict_batch_size = 16  # crops per forward pass
    prepare_tensor = None  # type: ignore[assignment]  # crops are cut from host images: no device decoding

    @property
    def network(self) -> PhotoCropsNet:
        return cast(PhotoCropsNet, self.module)

    @classmethod
    def default_options(cls) -> dict[str, Any]:
        return {"architecture": "tf_efficientnet_lite0", "stages": [1, 2, 3, 4, 5, 6, 7], "crop_size": 224,
                "grid": 2}

    @classmethod
    def build_module(cls, options: dict[str, Any]) -> nn.Module:
        return PhotoCropsNet(str(options["architecture"]), [int(s) for s in options["stages"]])

    @classmethod
    def preprocessing_for(cls, options: dict[str, Any]) -> Preprocessing:
        size = int(options["crop_size"])
        return Preprocessing((size, size), LITE_MEAN, LITE_STD, "none")

    def input_need(self) -> InputNeed:
        return FULL_RESOLUTION  # crops at the photo's own pixel scale, never a scaled decode

    def prepare(self, image: Image.Image) -> list[np.ndarray]:  # type: ignore[override]
        """The photo's crops (in the decode thread, so the decoded photo is released at once)."""
        return image_crops(image, int(self.options["crop_size"]), int(self.options["grid"]))[0]

    def crop_logits(self, images: Sequence[Image.Image]) -> list[np.ndarray]:
        """Per image, the logit of each of its crops (in ``crop_boxes`` order)."""
        return self.logits_of_crops([self.prepare(image) for image in images])

    def logits_of_crops(self, per_image: Sequence[list[np.ndarray]]) -> list[np.ndarray]:
        crops, owners = [], []
        for index, pieces in enumerate(per_image):
            crops += pieces
            owners += [index] * len(pieces)
        logits = np.zeros(len(crops), dtype=np.float32)
        for batch in same_size_batches([crop.shape[:2] for crop in crops], self.predict_batch_size):
            logits[batch] = self._logits([crops[i] for i in batch])
        owners_array = np.array(owners)
        return [logits[owners_array == index] for index in range(len(per_image))]

    @torch.inference_mode()
    def _logits(self, arrays: list[np.ndarray]) -> np.ndarray:
        batch = normalise(to_device(torch.from_numpy(np.stack(arrays)), self.device), self.preprocessing)
        with autocast(self.device, self.precision):
            return self.module(batch)[:, 0].float().cpu().numpy()

    def calibrated(self, logit: float) -> float:
        low, high = (float(value) for value in self.network.band)
        return calibrated_score(_sigmoid(logit), low, high)

    def scores(self, images: Sequence[Image.Image]) -> list[float]:
        return [self.calibrated(float(np.mean(logits))) for logits in self.crop_logits(images)]

    def predict(self, images: Sequence[Image.Image]) -> list[Prediction]:
        return self.predict_inputs([self.prepare(image) for image in images])

    def predict_inputs(self, inputs: Sequence[Any]) -> list[Prediction]:
        found = []
        for logits in self.logits_of_crops(inputs):
            parts = {f"crop{index}": self.calibrated(float(logit)) for index, logit in enumerate(logits)}
            found.append(Prediction(self.calibrated(float(np.mean(logits))), parts=parts))
        return found

    def explain(self, image: Image.Image) -> dict[str, Image.Image]:
        """Each crop's P(fake) painted over its square (overlaps averaged), blended on the photo."""
        from worker.detectors.overlays import heatmap_overlay

        _pieces, boxes = image_crops(image, int(self.options["crop_size"]), int(self.options["grid"]))
        logits = self.crop_logits([image])[0]
        total = np.zeros((image.height, image.width), dtype=np.float32)
        count = np.zeros_like(total)
        for (left, top, right, bottom), logit in zip(boxes, logits, strict=True):
            total[top:bottom, left:right] += self.calibrated(float(logit))
            count[top:bottom, left:right] += 1
        heat = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
        return {"crop-scores": heatmap_overlay(image, heat)}


def same_size_batches(sizes: list[tuple[int, ...]], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of equal crop size (an image smaller than a crop gives a
    smaller square), each group in its original order."""
    batches: list[list[int]] = []
    for size in sorted(set(sizes)):
        members = [index for index, item_size in enumerate(sizes) if item_size == size]
        batches += [members[start:start + batch_size] for start in range(0, len(members), batch_size)]
    return batches


def calibrated_score(probability: float, low: float, high: float) -> float:
    """Piecewise-linear, increasing map of [0, 1] onto [0, 1] taking ``low``/``high`` to the policy's band."""
    band_low, band_high = POLICY_BAND
    if probability < low:
        return band_low * probability / low
    if probability < high:
        return band_low + (band_high - band_low) * (probability - low) / (high - low)
    return band_high + (1 - band_high) * (probability - high) / (1 - high) if high < 1 else band_high


def _sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-value)) if value >= 0 else math.exp(value) / (1.0 + math.exp(value))
