"""Photo-like JPEGs for the throughput benchmarks, generated in code (no dataset is read).

Smooth large-scale structure (a few octaves of upsampled noise, like skies, walls and blurred
backgrounds), hard edges (shapes), fine texture and sensor noise, saved as a camera would:
JPEG quality 90, 4:2:0 chroma. Random noise images would be a poor stand-in: they compress
badly and decode far slower than photos, which would flatter any decode optimisation.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZES = {"2mp": (1632, 1224), "12mp": (4000, 3000)}


def photo(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    canvas = np.zeros((height, width, 3), dtype=np.float32)
    for octave, weight in ((8, 0.55), (32, 0.25), (128, 0.12)):
        small = rng.random((max(2, octave * height // width), octave, 3)).astype(np.float32)
        layer = Image.fromarray((small * 255).astype(np.uint8), "RGB").resize((width, height), Image.Resampling.BICUBIC)
        canvas += weight * np.asarray(layer, dtype=np.float32)
    image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        w, h = int(rng.integers(width // 20, width // 4)), int(rng.integers(height // 20, height // 4))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x, y, x + w, y + h), fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(1.2))
    grain = rng.normal(0, 4, (height, width, 1)).astype(np.float32)
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) + grain, 0, 255).astype(np.uint8), "RGB")


def variant(base: np.ndarray, seed: int) -> Image.Image:
    """A distinct photo from a base one, cheaply: shifted, mirrored or not, colours and grain changed."""
    rng = np.random.default_rng(seed)
    pixels = np.roll(base, (int(rng.integers(0, base.shape[0])), int(rng.integers(0, base.shape[1]))), axis=(0, 1))
    if rng.random() < 0.5:
        pixels = pixels[:, ::-1]
    gain = rng.uniform(0.8, 1.1, 3).astype(np.float32)
    return Image.fromarray(np.clip(pixels * gain + rng.integers(-20, 20), 0, 255).astype(np.uint8), "RGB")


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, subsampling=2)
    return buffer.getvalue()


def write_photos(folder: Path, counts: dict[str, int], seed: int = 0) -> list[Path]:
    """``counts`` photos per size name of SIZES, as ``folder/<size>/<n>.jpg``; returns the paths in key order.

    Four base photos per size, every file a distinct variant of one (see :func:`variant`);
    existing files are kept, so a folder can be reused between runs."""
    paths = []
    for number, (size, count) in enumerate(counts.items()):
        (folder / size).mkdir(parents=True, exist_ok=True)
        bases: list[np.ndarray] = []
        for index in range(count):
            path = folder / size / f"{index:04d}.jpg"
            if not path.exists():
                if len(bases) < 4:
                    bases.append(np.asarray(photo(*SIZES[size], seed=seed * 1000 + number * 10 + len(bases))))
                path.write_bytes(jpeg(variant(bases[index % len(bases)], seed * 100_000 + number * 10_000 + index)))
            paths.append(path)
    return sorted(paths)
