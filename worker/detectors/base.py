"""The detector contract every family implements.

A detector has a name, a version, a preprocessing config and a batch ``predict`` returning, per
image, a score in [0, 1] for "AI-generated" plus optional per-part scores. Families subclass
:class:`Detector` and register with :func:`worker.detectors.register_family`.

Contract v2 (what the worker pipeline relies on):

- ``load(folder, settings, manifest)`` builds the detector from its folder and the worker's
  settings object; a detector never reads the environment itself.
- ``input_need()`` says what the detector reads: no pixels (file bytes only), pixels at least
  ``side`` wide on each side, or full resolution. The pipeline decodes each object once for all
  detectors of a scan, at the largest need (JPEG DCT scaling, early reduction of other formats).
  A manifest with ``"full_resolution": true`` opts a sized detector out.
- ``prepare(image)`` turns one decoded image into the detector's input (run in the decode
  threads, so the decoded image is released at once); ``predict_inputs`` scores a chunk of them.
  Families that only implement ``predict`` get the image itself as input.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Literal, Sequence

from PIL import Image

from fakescan.catalog import MANIFEST

if TYPE_CHECKING:
    from fakescan.settings import Settings


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
class InputNeed:
    """What a detector reads: ``none`` (file bytes only), ``size`` (each side at least ``side``
    pixels: the decoder may scale down to that) or ``full`` (native resolution, no scaling)."""

    kind: Literal["none", "size", "full"]
    side: int = 0

    @classmethod
    def pixels(cls, size: Iterable[int]) -> "InputNeed":
        """Enough pixels for a network input of ``size`` (height, width), whatever the orientation."""
        return cls("size", max(int(side) for side in size))

    @staticmethod
    def largest(needs: Iterable["InputNeed"]) -> "InputNeed":
        """The need that serves all of ``needs`` from one decode (``none`` when none reads pixels)."""
        needs = [need for need in needs if need.kind != "none"]
        if any(need.kind == "full" for need in needs):
            return FULL_RESOLUTION
        return InputNeed("size", max(need.side for need in needs)) if needs else NO_PIXELS


NO_PIXELS = InputNeed("none")
FULL_RESOLUTION = InputNeed("full")


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
    """One fetched object. ``image()`` decodes lazily, once, so metadata-only detectors never pay for pixels.

    For a detector that declares ``head_bytes``, ``data`` may be the object's head only; ``whole()``
    reads the rest when the detector needs it (``rest`` is None when ``data`` is complete)."""

    uri: str
    data: bytes
    decoder: Any = None  # callable(bytes) -> PIL.Image (RGB), raising fakescan.decode.DecodeError
    rest: Callable[[], bytes] | None = None
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

    @property
    def complete(self) -> bool:
        return self.rest is None

    def whole(self) -> bytes:
        """Every byte of the object (read once, on first use, when ``data`` was only its head)."""
        if self.rest is not None:
            self.data, self.rest = self.rest(), None
        return self.data


class Detector(ABC):
    """A loaded detector. Subclasses set ``family`` and implement ``predict`` (and ``load``/``save``)."""

    family: ClassVar[str]
    needs_pixels: ClassVar[bool] = True  # False: file bytes only (see input_need)
    # True when prepare() returns the decoded image itself: it stays alive until its chunk is scored
    prepare_keeps_image: ClassVar[bool] = True
    # a metadata detector that can start from the object's first bytes (Sample.whole() reads the rest)
    head_bytes: ClassVar[int | None] = None

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

    def input_need(self) -> InputNeed:
        """What the family reads; sized families override this (the default is the safe choice)."""
        return FULL_RESOLUTION if self.needs_pixels else NO_PIXELS

    def decode_need(self) -> InputNeed:
        """``input_need`` unless the manifest opts out of scaled decoding (``"full_resolution": true``)."""
        need = self.input_need()
        if need.kind == "size" and self.manifest.get("full_resolution"):
            return FULL_RESOLUTION
        return need

    def prepare(self, image: Image.Image) -> Any:
        """One decoded RGB image as this detector's input (runs in a decode thread)."""
        return image

    def predict_inputs(self, inputs: Sequence[Any]) -> list[Prediction]:
        """Score prepared inputs (what ``prepare`` returned), one :class:`Prediction` each, in order."""
        return self.predict(inputs)

    def verdict(self, score: float | None) -> str | None:
        return self.thresholds.verdict(score)

    def explain(self, image: Image.Image) -> dict[str, Image.Image]:
        """Explanation overlays (Grad-CAM, attention) by name; families without one return {}."""
        return {}

    @classmethod
    @abstractmethod
    def load(cls, folder: Path | None, settings: "Settings", manifest: dict[str, Any]) -> "Detector":
        """Build from a detector folder (already local; None for weightless families) and its manifest,
        on ``settings.resolved_device()`` at ``settings.precision``; everything configurable comes
        from ``settings``, never from the environment."""

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
