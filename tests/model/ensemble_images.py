"""Generated images for the one-class ensemble tests.

"Real" images are smooth scenes: a sky-to-ground colour gradient with a few soft blobs and a
little sensor-like noise. The planted anomaly is what a crude generator might leave behind: a
strong periodic high-frequency grid and colours no real scene in the set has.
"""

from __future__ import annotations

import numpy as np

SIZE = 32


def smooth_scenes(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    images = np.empty((n, SIZE, SIZE, 3), dtype=np.uint8)
    for i in range(n):
        top, bottom = rng.uniform(0.3, 0.8, 3), rng.uniform(0.1, 0.5, 3)
        scene = top + (bottom - top) * y[..., None]
        for _ in range(rng.integers(1, 4)):
            cy, cx, radius = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.1, 0.3)
            blob = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * radius ** 2))
            scene = scene + blob[..., None] * rng.uniform(-0.25, 0.25, 3)
        scene = scene + rng.normal(0, 0.01, scene.shape)
        images[i] = np.clip(scene * 255, 0, 255).astype(np.uint8)
    return images


def planted_anomalies(n: int, seed: int) -> np.ndarray:
    """Smooth scenes with a strong 2-pixel grid and oversaturated, channel-swapped colours."""
    rng = np.random.default_rng(seed)
    scenes = smooth_scenes(n, seed).astype(np.float64) / 255
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    grid = np.where((x + y) % 2 == 0, 1.0, -1.0) * rng.uniform(0.15, 0.25, (n, 1, 1))
    wrong_colours = np.clip((scenes[..., ::-1] - 0.5) * 2.5 + 0.5, 0, 1)
    return np.clip((wrong_colours + grid[..., None]) * 255, 0, 255).astype(np.uint8)


def probe_set(n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Held-out normal images followed by planted anomalies, and their labels (1 = anomaly)."""
    images = np.concatenate([smooth_scenes(n, seed=1), planted_anomalies(n, seed=2)])
    return images, np.r_[np.zeros(n), np.ones(n)]
