"""Test-only detector families, registered (catalog and detector registry) when this module is imported.

- ``test-brightness``: score = mean pixel brightness; its manifest can make it slow
  (``delay_seconds`` per batch, to catch a worker mid-batch), raise on images of one width
  (``raise_on_width``: a detector that chokes on one weird input) or raise always (``always_raise``).
- ``test-bytes``: a metadata-only detector scoring the byte length, which never decodes pixels.

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
from worker.detectors import Detector, Prediction, Sample, register_family

WRAPPER = ("import tests.worker_families, sys; from fakescan.cli import main; sys.exit(main(sys.argv[1:]))")

for _name, _summary in (("test-brightness", "test only: mean brightness as the score"),
                        ("test-bytes", "test only: byte length as the score, never decodes")):
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
    def load(cls, folder: Path | None, manifest: dict[str, Any], device: str, precision: str) -> "BrightnessDetector":
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
    def load(cls, folder: Path | None, manifest: dict[str, Any], device: str, precision: str) -> "ByteLengthDetector":
        return cls(manifest["name"], str(manifest["version"]), manifest)
