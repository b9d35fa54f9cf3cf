"""The member contract and registry of the one-class ensemble.

A member is one anomaly detector fitted on real images only. It reads named features from a
:class:`~worker.detectors.ensemble.features.FeatureBank`, and its raw score grows with how unlike
the training images an image is. Members save themselves into the detector folder (torch weights
as safetensors, scikit-learn estimators as skops) and describe themselves with a small JSON config
that goes into the manifest.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, TypeVar

import numpy as np

from fakescan.catalog import DuplicateName, UnknownDetector
from worker.detectors.ensemble.features import FeatureBank


@dataclass(frozen=True)
class FitContext:
    seed: int
    device: str
    progress: bool  # show a per-epoch bar for the slow members


class Member(ABC):
    name: ClassVar[str]
    features: ClassVar[tuple[str, ...]]
    summary: ClassVar[str]

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.config: dict[str, Any] = dict(config or {})
        # a saved member keeps the feature list it was fitted on, so a later change of the class
        # default cannot feed it columns it has never seen
        self.config.setdefault("features", list(self.features))

    def inputs(self, bank: FeatureBank) -> np.ndarray:
        return bank.stack(tuple(self.config["features"]))

    @abstractmethod
    def fit(self, bank: FeatureBank, context: FitContext) -> None:
        """Learn what real images look like from every image in ``bank``."""

    @abstractmethod
    def score(self, bank: FeatureBank) -> np.ndarray:
        """Raw anomaly score per image, float64, higher = less like the training images."""

    @abstractmethod
    def save(self, folder: Path) -> list[str]:
        """Write the fitted state into ``folder``; returns the file names written."""

    @classmethod
    @abstractmethod
    def load(cls, folder: Path, config: dict[str, Any], device: str) -> "Member":
        """Rebuild the fitted member from ``folder`` (raises DetectorError when refused)."""


_MEMBERS: dict[str, type[Member]] = {}
_OPT_IN: set[str] = set()
M = TypeVar("M", bound=type[Member])


def register_member(name: str, default: bool = True) -> Callable[[M], M]:
    """``default=False``: an opt-in member, fitted only when ``--members`` names it."""
    def decorate(cls: M) -> M:
        if name in _MEMBERS:
            raise DuplicateName(f"ensemble member {name!r} is already registered by {_MEMBERS[name].__qualname__}")
        cls.name = name
        _MEMBERS[name] = cls
        if not default:
            _OPT_IN.add(name)
        return cls

    return decorate


def member_names(opt_in: bool = False) -> list[str]:
    """The default members in the model card's order (registration order); ``opt_in``: every member."""
    return [name for name in _MEMBERS if opt_in or name not in _OPT_IN]


def member_class(name: str) -> type[Member]:
    try:
        return _MEMBERS[name]
    except KeyError:
        raise UnknownDetector(f"unknown ensemble member {name!r}; valid: {', '.join(_MEMBERS)}") from None


def parse_members(text: str | None) -> list[str]:
    """A comma-separated member list (None or empty means all), validated against the registry."""
    if not text:
        return member_names()
    names = [part.strip() for part in text.split(",") if part.strip()]
    for name in names:
        member_class(name)
    if len(set(names)) != len(names):
        raise DuplicateName(f"ensemble member listed twice in {text!r}")
    return names
