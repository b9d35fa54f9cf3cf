"""The detector contract every family implements.

A detector has a name, a version, a preprocessing config and a batch ``predict`` returning, per
image, a score in [0, 1] for "AI-generated" plus optional per-part scores. Families subclass
:class:`Detector` and register with :func:`worker.detectors.register_family`.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

from PIL import Image

from fakescan.catalog import MANIFEST


@dataclass(frozen=True)
class Preprocessing:
    size: tuple[int, int]  # (height, width) fed to the network
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    resample: str = "bilinear"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Preprocessing":
        return cls(tuple(data["size"]), tuple(data["mean"]), tuple(data["std"]), data.get("resample", "bilinear"))

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Thresholds:
    """fake when score >= high, real when score < low, uncertain in between."""

    threshold: float = 0.5
    low: float | None = None
    high: float | None = None

    def verdict(self, score: float | None) -> str | None:
        if score is None:
            return None
        low = self.threshold if self.low is None else self.low
        high = self.threshold if self.high is None else self.high
        if score >= high:
            return "fake"
        if score < low:
            return "real"
        return "uncertain"

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> "Thresholds":
        data = data or {}
        return cls(float(data.get("threshold", 0.5)), data.get("low"), data.get("high"))

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Prediction:
    score: float | None  # P(AI-generated); None when the detector found no evidence either way
    parts: dict[str, float] | None = None  # per-member / per-signal scores
    evidence: Any = None  # JSON-serialisable facts behind the score (provenance fields, ...)
    error: str | None = None  # this object could not be judged by this detector (bad input)


@dataclass
class Sample:
    """One fetched object. ``image()`` decodes lazily, once, so metadata-only detectors never pay for pixels."""

    uri: str
    data: bytes
    decoder: Any = None  # callable(bytes) -> PIL.Image (RGB), raising worker.decode.DecodeError
    _image: Image.Image | None = field(default=None, repr=False)
    _error: Exception | None = field(default=None, repr=False)

    def image(self) -> Image.Image:
        if self._error is not None:
            raise self._error
        if self._image is None:
            try:
                self._image = self.decoder(self.data)
            except Exception as error:  # remembered so every pixel detector reports the same reason
                self._error = error
                raise
        return self._image


class Detector(ABC):
    """A loaded detector. Subclasses set ``family`` and implement ``predict`` (and ``load``/``save``)."""

    family: ClassVar[str]
    needs_pixels: ClassVar[bool] = True

    def __init__(self, name: str, version: str, manifest: dict[str, Any]) -> None:
        self.name = name
        self.version = version
        self.manifest = manifest
        self.thresholds = Thresholds.from_json(manifest.get("thresholds"))

    @abstractmethod
    def predict(self, images: Sequence[Image.Image]) -> list[Prediction]:
        """Score decoded RGB images, one :class:`Prediction` each, in order."""

    def predict_samples(self, samples: Sequence[Sample]) -> list[Prediction]:
        """Decode what can be decoded, score it batched; undecodable samples become error predictions."""
        predictions: list[Prediction | None] = [None] * len(samples)
        images, positions = [], []
        for position, sample in enumerate(samples):
            try:
                images.append(sample.image())
                positions.append(position)
            except Exception as error:
                predictions[position] = Prediction(None, error=str(error) or type(error).__name__)
        for position, prediction in zip(positions, self.predict(images) if images else [], strict=True):
            predictions[position] = prediction
        return [p for p in predictions if p is not None]

    def verdict(self, score: float | None) -> str | None:
        return self.thresholds.verdict(score)

    def explain(self, image: Image.Image) -> dict[str, Image.Image]:
        """Explanation overlays (Grad-CAM, attention) by name; families without one return {}."""
        return {}

    @classmethod
    @abstractmethod
    def load(cls, folder: Path | None, manifest: dict[str, Any], device: str, precision: str) -> "Detector":
        """Build from a detector folder (already local; None for weightless families) on a device."""

    def write_manifest(self, folder: Path) -> None:
        write_manifest(self.manifest, folder)


def write_manifest(manifest: dict[str, Any], folder: Path) -> None:
    """Finish a detector folder: its weights made readable, then ``fakescan.json`` replaced atomically.

    safetensors (and transformers' ``save_pretrained`` through it) create weight files with mode
    0600 whatever the umask, so a worker running as another user (the Helm chart runs non-root)
    could not read a detector written by ``fakescan train`` on a shared volume. The weights get
    the mode the process umask gives any other file."""
    folder.mkdir(parents=True, exist_ok=True)
    readable = 0o666 & ~_umask()
    for weights in [*folder.glob("*.safetensors"), *folder.glob("members/**/*.safetensors")]:
        weights.chmod(readable)
    partial = folder / f".{MANIFEST}.partial"
    partial.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(partial, folder / MANIFEST)


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it
    os.umask(mask)
    return mask
