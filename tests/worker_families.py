"""Test-only detector families, registered (catalog and detector registry) when this module is imported.

- ``test-brightness``: score = mean pixel brightness; its manifest can make it slow
  (``delay_seconds`` per batch, to catch a worker mid-batch), raise on images of one width
  (``raise_on_width``: a detector that chokes on one weird input) or raise always (``always_raise``).
- ``test-bytes``: a metadata-only detector scoring the byte length, which never decodes pixels.
- ``test-sized``: declares an input need of ``side`` pixels (manifest) and reports in its evidence
  the size of the decoded image it was given.

Worker subprocesses load them through ``WRAPPER``:
``python -c WRAPPER worker ...`` is ``fakescan worker ...`` with these families known.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from fakescan.catalog import FamilyInfo, families, register_family_info
from fakescan.settings import Settings
from worker.detectors import Detector, InputNeed, Prediction, Sample, register_family

WRAPPER = ("import tests.worker_families, sys; from fakescan.cli import main; sys.exit(main(sys.argv[1:]))")

for _name, _summary in (("test-brightness", "test only: mean brightness as the score"),
                        ("test-bytes", "test only: byte length as the score, never decodes"),
                        ("test-sized", "test only: declares an input size, reports the decoded size")):
    if _name not in families():
        register_family_info(FamilyInfo(_name, __name__, _summary))


@register_family("test-brightness")
class BrightnessDetector(Detector):
    def predict(self, images: Sequence[Image.Image]) -> list[Prediction]:
        time.sleep(float(self.manifest.get("delay_seconds", 0)))
        if self.manifest.get("always_raise"):
            raise RuntimeError("this detector is broken")
        poison = self.manifest.get("raise_on_width")
        if poison is not None and any(image.width == poison for image in images):
            raise ValueError(f"cannot handle width {poison}")
        return [Prediction(float(np.asarray(image, dtype=np.float32).mean() / 255.0)) for image in images]

    @classmethod
    def load(cls, folder: Path | None, settings: Settings, manifest: dict[str, Any]) -> "BrightnessDetector":
        return cls(manifest["name"], str(manifest["version"]), manifest)


@register_family("test-bytes")
class ByteLengthDetector(Detector):
    needs_pixels = False

    def predict(self, images: Sequence[Image.Image]) -> list[Prediction]:
        raise NotImplementedError("metadata only: predict_samples never decodes")

    def predict_samples(self, samples: Sequence[Sample]) -> list[Prediction]:
        return [Prediction(min(1.0, len(sample.data) / 10_000), evidence={"bytes": len(sample.data)})
                for sample in samples]

    @classmethod
    def load(cls, folder: Path | None, settings: Settings, manifest: dict[str, Any]) -> "ByteLengthDetector":
        return cls(manifest["name"], str(manifest["version"]), manifest)


@register_family("test-sized")
class SizedDetector(Detector):
    prepare_keeps_image = False

    def input_need(self) -> InputNeed:
        return InputNeed("size", int(self.manifest["side"]))

    def prepare(self, image: Image.Image) -> tuple[int, int]:
        return image.size

    def predict(self, images: Sequence[Image.Image]) -> list[Prediction]:
        return self.predict_inputs([self.prepare(image) for image in images])

    def predict_inputs(self, inputs: Sequence[tuple[int, int]]) -> list[Prediction]:
        return [Prediction(0.5, evidence={"decoded": list(size)}) for size in inputs]

    @classmethod
    def load(cls, folder: Path | None, settings: Settings, manifest: dict[str, Any]) -> "SizedDetector":
        return cls(manifest["name"], str(manifest["version"]), manifest)
