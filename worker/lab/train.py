"""``fakescan train``'s front door: find the family's recipe in the lab, run it, load what it wrote.

Importing this module imports every recipe module, so each registers its families
(:mod:`worker.lab.recipes`). A family without a recipe is refused with the list of those that have one.
"""

from __future__ import annotations

from pathlib import Path

from fakescan.settings import Settings
from worker.detectors import Detector, detector_class
from worker.lab import cnn, photo_crops, siglip2  # noqa: F401  (each registers its recipes)
from worker.lab.config import TrainConfig
from worker.lab.recipes import recipe_for


def train(family: str, data: str, out: Path, config: TrainConfig, settings: Settings,
          command: str = "", name: str | None = None, progress: bool = True) -> Detector:
    """Train ``family`` on ``data`` into the folder ``out``; returns the trained detector as a scan loads it."""
    cls = detector_class(family)  # an unknown family names the known ones
    manifest = recipe_for(family)(data, out, config, settings, command=command, name=name, progress=progress)
    return cls.load(out, settings.model_copy(update={"device": config.device, "precision": config.precision}),
                    manifest)
