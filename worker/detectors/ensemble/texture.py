"""Texture features: local binary patterns, grey-level co-occurrence statistics, patch statistics.

Written in numpy rather than taken from scikit-image: at the ensemble's working sizes (32-128
pixels) a vectorised pass over the whole batch is faster than a per-image library call, and the
worker image stays one dependency lighter.
"""

from __future__ import annotations

import numpy as np

from worker.detectors.ensemble.features import gray, histogram_rows, laplacian, pyramid, register_feature

# the 8 neighbours at radius 1, in circular order so bit transitions can be counted
NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))
LBP_EDGES = np.arange(11) - 0.5  # riu2 codes 0..9
GLCM_LEVELS = 8
GLCM_OFFSETS = ((0, 1), (1, 0), (1, 1))


def lbp_riu2(g: np.ndarray) -> np.ndarray:
    """Rotation-invariant uniform LBP codes (0..8 = number of brighter neighbours, 9 = non-uniform)."""
    centre = g[:, 1:-1, 1:-1]
    h, w = centre.shape[1:]
    bits = np.stack([g[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w] >= centre for dy, dx in NEIGHBOURS], axis=-1)
    transitions = (bits != np.roll(bits, 1, axis=-1)).sum(axis=-1)
    return np.where(transitions <= 2, bits.sum(axis=-1), 9)


def glcm_statistics(g: np.ndarray) -> np.ndarray:
    """Contrast, homogeneity, energy and correlation of the symmetric co-occurrence matrix per offset."""
    levels = np.minimum((g * GLCM_LEVELS).astype(int), GLCM_LEVELS - 1)
    i, j = np.meshgrid(np.arange(GLCM_LEVELS), np.arange(GLCM_LEVELS), indexing="ij")
    out = []
    for dy, dx in GLCM_OFFSETS:
        a = levels[:, : levels.shape[1] - dy, : levels.shape[2] - dx]
        b = levels[:, dy:, dx:]
        matrix = cooccurrence(a, b)
        mean = (matrix * i).sum(axis=(1, 2))
        var = (matrix * (i - mean[:, None, None]) ** 2).sum(axis=(1, 2)) + 1e-8
        correlation = (matrix * (i - mean[:, None, None]) * (j - mean[:, None, None])).sum(axis=(1, 2)) / var
        out += [(matrix * (i - j) ** 2).sum(axis=(1, 2)), (matrix / (1 + np.abs(i - j))).sum(axis=(1, 2)),
                np.sqrt((matrix ** 2).sum(axis=(1, 2))), correlation]
    return np.stack(out, axis=1)


def cooccurrence(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    n = len(a)
    pairs = (a * GLCM_LEVELS + b).reshape(n, -1) + GLCM_LEVELS ** 2 * np.arange(n)[:, None]
    counts = np.bincount(pairs.ravel(), minlength=n * GLCM_LEVELS ** 2).reshape(n, GLCM_LEVELS, GLCM_LEVELS)
    symmetric = counts + counts.transpose(0, 2, 1)
    return symmetric / symmetric.sum(axis=(1, 2), keepdims=True)


@register_feature("texture")
def texture(x: np.ndarray) -> np.ndarray:
    """LBP histograms at two scales and co-occurrence statistics at full scale."""
    scales = pyramid(gray(x), 2)
    lbp = [histogram_rows(lbp_riu2(g).reshape(len(g), -1), LBP_EDGES) for g in scales]
    return np.concatenate(lbp + [glcm_statistics(scales[0])], axis=1)


PATCH = 8
QUANTILES = (0.1, 0.5, 0.9)


def patch_scale(g: np.ndarray) -> np.ndarray:
    """Quantiles over 8x8 patches of log contrast, log residual energy and their ratio."""
    n, h, w = g.shape
    rows, cols = h // PATCH, w // PATCH
    patches = g[:, : rows * PATCH, : cols * PATCH].reshape(n, rows, PATCH, cols, PATCH).transpose(0, 1, 3, 2, 4)
    patches = patches.reshape(n, rows * cols, PATCH, PATCH)
    contrast = np.log(patches.std(axis=(2, 3)) + 1e-4)
    residual = laplacian(patches.reshape(-1, PATCH, PATCH)).reshape(n, rows * cols, -1)
    energy = np.log(residual.std(axis=2) + 1e-4)
    stats = [np.quantile(v, QUANTILES, axis=1).T for v in (contrast, energy, energy - contrast)]
    return np.concatenate(stats, axis=1)


@register_feature("patches")
def patches(x: np.ndarray) -> np.ndarray:
    """How contrast and fine residual are spread over the image, at two scales."""
    return np.concatenate([patch_scale(g) for g in pyramid(gray(x), 2)], axis=1)
