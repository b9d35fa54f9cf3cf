"""Image perturbations for robustness figures: ``jpeg:75,resize:0.5,blur:1``."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable

from PIL import Image, ImageFilter

from fakescan.errors import UsageError


@dataclass(frozen=True)
class Perturbation:
    kind: str
    amount: float

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.amount:g}"

    def apply(self, image: Image.Image) -> Image.Image:
        return _KINDS[self.kind][0](image, self.amount)


def _jpeg(image: Image.Image, quality: float) -> Image.Image:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as reloaded:
        return reloaded.convert("RGB")


def _resize(image: Image.Image, factor: float) -> Image.Image:
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    return image.resize(size, Image.Resampling.BICUBIC)


def _blur(image: Image.Image, radius: float) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(radius))


_KINDS: dict[str, tuple[Callable[[Image.Image, float], Image.Image], Callable[[float], bool], str]] = {
    "jpeg": (_jpeg, lambda q: 1 <= q <= 100, "JPEG quality 1-100"),
    "resize": (_resize, lambda f: 0 < f <= 8, "scale factor in (0, 8]"),
    "blur": (_blur, lambda r: 0 < r <= 50, "Gaussian blur radius in (0, 50]"),
}


def parse_perturbations(text: str | None) -> list[Perturbation]:
    found = []
    for part in (text or "").split(","):
        if not part.strip():
            continue
        kind, _, amount = part.strip().partition(":")
        if kind not in _KINDS:
            raise UsageError(f"unknown perturbation {kind!r}; known: {', '.join(sorted(_KINDS))} (e.g. jpeg:75)")
        try:
            value = float(amount)
        except ValueError:
            raise UsageError(f"perturbation {part!r} needs a number: {_KINDS[kind][2]}") from None
        if not _KINDS[kind][1](value):
            raise UsageError(f"perturbation {part!r} out of range: {_KINDS[kind][2]}")
        found.append(Perturbation(kind, value))
    return found
