"""Detector families behind a registry.

Each family is one module that decorates its :class:`~worker.detectors.base.Detector` subclass
with ``@register_family``; ``fakescan.catalog`` names the module so it is imported only when a
detector of that family is loaded. A duplicate family raises; an unknown one names the known.
"""

from __future__ import annotations

import importlib
from typing import Callable, TypeVar

from fakescan.catalog import DetectorRef, DuplicateName, family_info, local_folder
from fakescan.settings import Settings
from worker.detectors.base import (
    FULL_RESOLUTION,
    NO_PIXELS,
    Detector,
    InputNeed,
    Prediction,
    Preprocessing,
    Sample,
    Thresholds,
)

__all__ = ["FULL_RESOLUTION", "NO_PIXELS", "Detector", "InputNeed", "Prediction", "Preprocessing", "Sample",
           "Thresholds", "register_family", "detector_class", "load_detector"]

_CLASSES: dict[str, type[Detector]] = {}
D = TypeVar("D", bound=type[Detector])


def register_family(name: str) -> Callable[[D], D]:
    def decorate(cls: D) -> D:
        if name in _CLASSES and _CLASSES[name] is not cls:
            raise DuplicateName(f"detector family {name!r} is already registered by {_CLASSES[name].__qualname__}")
        cls.family = name
        _CLASSES[name] = cls
        return cls

    return decorate


def detector_class(family: str) -> type[Detector]:
    info = family_info(family)  # raises UnknownDetector naming the known families
    if family not in _CLASSES:
        importlib.import_module(info.module)
    if family not in _CLASSES:
        raise DuplicateName(f"module {info.module} did not register family {family!r}")
    return _CLASSES[family]


def load_detector(ref: DetectorRef, settings: Settings) -> Detector:
    """Build the detector a ref names on the configured device; S3 folders are fetched once per version."""
    cls = detector_class(ref.family)
    folder = local_folder(ref, settings)
    manifest = dict(ref.manifest) or {"name": ref.name, "family": ref.family, "version": ref.version}
    detector = cls.load(folder, settings, manifest)
    detector.name, detector.version = ref.name, ref.version
    return detector
