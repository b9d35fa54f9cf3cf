"""Hand-made image features, computed once per image and shared by the members that use them.

Images arrive as a uint8 array ``(n, size, size, 3)`` (already resized to the ensemble's working
size). A :class:`FeatureBank` computes each named feature at most once per batch, so the five
members that read colour or edge statistics do not each recompute them. Every feature function
returns a float32 ``(n, d)`` array; apart from ``pixels`` its width does not depend on the
working size. Texture features live in :mod:`.texture`.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from PIL import Image

from fakescan.catalog import DuplicateName, UnknownDetector

FeatureFn = Callable[[np.ndarray], np.ndarray]
_FEATURES: dict[str, FeatureFn] = {}
CHUNK = 512  # images per feature pass: bounds the float copies of a large fit
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def register_feature(name: str) -> Callable[[FeatureFn], FeatureFn]:
    def decorate(fn: FeatureFn) -> FeatureFn:
        if name in _FEATURES:
            raise DuplicateName(f"feature {name!r} is already registered")
        _FEATURES[name] = fn
        return fn

    return decorate


def feature_fn(name: str) -> FeatureFn:
    try:
        return _FEATURES[name]
    except KeyError:
        raise UnknownDetector(f"unknown feature {name!r}; known: {', '.join(sorted(_FEATURES))}") from None


class FeatureBank:
    """Named features of one batch of images, each computed on first use and then reused."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = images
        self._cache: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.images)

    def get(self, name: str) -> np.ndarray:
        if name not in self._cache:
            fn = feature_fn(name)
            parts = [fn(_as_float(self.images[i:i + CHUNK])) for i in range(0, len(self.images), CHUNK)]
            self._cache[name] = np.concatenate(parts).astype(np.float32)
        return self._cache[name]

    def computed(self, name: str, compute: FeatureFn) -> np.ndarray:
        """A feature that needs state the registry cannot hold (a member's own network), computed
        once per bank by ``compute`` on the uint8 images and shared like the registered ones."""
        if name not in self._cache:
            parts = [compute(self.images[i:i + CHUNK]) for i in range(0, len(self.images), CHUNK)]
            self._cache[name] = np.concatenate(parts).astype(np.float32)
        return self._cache[name]

    def stack(self, names: tuple[str, ...]) -> np.ndarray:
        return np.concatenate([self.get(name) for name in names], axis=1)

    def subset(self, rows: np.ndarray) -> "FeatureBank":
        """A bank over some of the images that keeps the features already computed."""
        bank = FeatureBank(self.images[rows])
        bank._cache = {name: values[rows] for name, values in self._cache.items()}
        return bank


def to_array(images: Sequence[Image.Image], size: int) -> np.ndarray:
    """RGB images resized (antialiased) to size x size, as one uint8 (n, size, size, 3) array."""
    array = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
        array[i] = np.asarray(rgb)
    return array


def _as_float(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) / 255.0


def gray(x: np.ndarray) -> np.ndarray:
    return x @ LUMA


def halve(x: np.ndarray) -> np.ndarray:
    """2x2 box downsampling of (n, h, w[, c]) with even h and w."""
    n, h, w = x.shape[:3]
    return x.reshape(n, h // 2, 2, w // 2, 2, *x.shape[3:]).mean(axis=(2, 4))


def pyramid(x: np.ndarray, levels: int) -> list[np.ndarray]:
    scales = [x]
    for _ in range(levels - 1):
        scales.append(halve(scales[-1]))
    return scales


def log_energy(values: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    return np.log(np.mean(values ** 2, axis=axes) + 1e-8)


def laplacian(g: np.ndarray) -> np.ndarray:
    """4-neighbour Laplacian of (n, h, w[, c]): the finest high-pass residual."""
    return 4 * g[:, 1:-1, 1:-1] - g[:, :-2, 1:-1] - g[:, 2:, 1:-1] - g[:, 1:-1, :-2] - g[:, 1:-1, 2:]


def sobel(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.pad(g, ((0, 0), (1, 1), (1, 1)), mode="edge")
    gx = (p[:, :-2, 2:] + 2 * p[:, 1:-1, 2:] + p[:, 2:, 2:]) - (p[:, :-2, :-2] + 2 * p[:, 1:-1, :-2] + p[:, 2:, :-2])
    gy = (p[:, 2:, :-2] + 2 * p[:, 2:, 1:-1] + p[:, 2:, 2:]) - (p[:, :-2, :-2] + 2 * p[:, :-2, 1:-1] + p[:, :-2, 2:])
    return gx / 8, gy / 8


def histogram_rows(values: np.ndarray, edges: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Per-row normalised histogram of (n, m) values over fixed bin edges."""
    bins = np.clip(np.digitize(values, edges[1:-1]), 0, len(edges) - 2)
    n = values.shape[0]
    flat = bins + (len(edges) - 1) * np.arange(n)[:, None]
    counts = np.bincount(flat.ravel(), weights=None if weights is None else weights.ravel(),
                         minlength=n * (len(edges) - 1)).reshape(n, -1)
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1e-8)


# ---- frequency ------------------------------------------------------------------------------------

RADIAL_BINS, PHASE_BINS, FFT_SCALES = 10, 5, 2
SPECTRUM_WIDTH = RADIAL_BINS + 2 + PHASE_BINS  # columns per scale in "fft_multiscale"


def _radius(h: int, w: int) -> np.ndarray:
    fy, fx = np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij")
    return np.minimum(np.hypot(fy, fx) / 0.5, 0.999)


def _band_mean(values: np.ndarray, band: np.ndarray, bins: int) -> np.ndarray:
    """Mean of (n, h, w) values over each of ``bins`` radial bands (band = bin index per pixel)."""
    flat = values.reshape(len(values), -1)
    index = band.ravel()
    sums = np.stack([flat[:, index == b].mean(axis=1) for b in range(bins)], axis=1)
    return sums


def spectrum_scale(g: np.ndarray) -> np.ndarray:
    """Log power per radial band, horizontal/vertical high-frequency balance, phase coherence per band."""
    h, w = g.shape[1:]
    spectrum = np.fft.fft2(g - g.mean(axis=(1, 2), keepdims=True))
    radius = _radius(h, w)
    power = np.log(np.abs(spectrum) ** 2 + 1e-8)
    magnitude = _band_mean(power, (radius * RADIAL_BINS).astype(int), RADIAL_BINS)
    fy, fx = np.meshgrid(np.abs(np.fft.fftfreq(h)), np.abs(np.fft.fftfreq(w)), indexing="ij")
    high = radius > 0.5
    balance = np.stack([power[:, high & (fy > fx)].mean(axis=1) - power[:, high & (fx > fy)].mean(axis=1),
                        power[:, high].std(axis=1)], axis=1)
    # how predictable the phase is between neighbouring frequencies: edges align it, noise scrambles it
    step = np.exp(1j * (np.angle(spectrum[:, :, 1:]) - np.angle(spectrum[:, :, :-1])))
    phase_band = (radius[:, 1:] * PHASE_BINS).astype(int)
    coherence = np.stack([np.abs(step[:, phase_band == b].mean(axis=1)) for b in range(PHASE_BINS)], axis=1)
    return np.concatenate([magnitude, balance, coherence], axis=1)


@register_feature("fft_multiscale")
def fft_multiscale(x: np.ndarray) -> np.ndarray:
    return np.concatenate([spectrum_scale(g) for g in pyramid(gray(x), FFT_SCALES)], axis=1)


# ---- edges and residuals --------------------------------------------------------------------------

MAGNITUDE_EDGES = np.array([-np.inf, -5.0, -4.0, -3.0, -2.0, -1.0, np.inf])
ORIENTATION_EDGES = np.linspace(0, np.pi, 5)


def edge_scale(g: np.ndarray) -> np.ndarray:
    gx, gy = sobel(g)
    magnitude = np.hypot(gx, gy).reshape(len(g), -1)
    orientation = (np.arctan2(gy, gx) % np.pi).reshape(len(g), -1)
    summary = np.stack([np.log(magnitude.mean(axis=1) + 1e-6), np.log(magnitude.std(axis=1) + 1e-6),
                        log_energy(gy, (1, 2)) - log_energy(gx, (1, 2))], axis=1)
    return np.concatenate([summary, histogram_rows(np.log(magnitude + 1e-6), MAGNITUDE_EDGES),
                           histogram_rows(orientation, ORIENTATION_EDGES, weights=magnitude)], axis=1)


@register_feature("edges_multiscale")
def edges_multiscale(x: np.ndarray) -> np.ndarray:
    return np.concatenate([edge_scale(g) for g in pyramid(gray(x), 3)], axis=1)


def residual_scale(x: np.ndarray) -> np.ndarray:
    residual = laplacian(x)
    variance = residual.var(axis=(1, 2)) + 1e-10
    kurtosis = (residual ** 4).mean(axis=(1, 2)) / variance ** 2
    g = gray(x)
    steps = [np.abs(np.diff(g, axis=2)).mean(axis=(1, 2)), np.abs(np.diff(g, axis=1)).mean(axis=(1, 2))]
    return np.concatenate([np.log(variance), np.log(kurtosis), np.stack(steps, axis=1)], axis=1)


@register_feature("residual_stats")
def residual_stats(x: np.ndarray) -> np.ndarray:
    """High-pass residual energy and tails per colour channel, at two scales, plus gradient steps."""
    clipped = ((x < 0.02) | (x > 0.98)).mean(axis=(1, 2, 3))[:, None]
    return np.concatenate([residual_scale(s) for s in pyramid(x, 2)] + [clipped], axis=1)


# ---- colour ---------------------------------------------------------------------------------------

COLOUR_EDGES = np.linspace(0, 1, 9)


@register_feature("colour")
def colour(x: np.ndarray) -> np.ndarray:
    """Per-channel 8-bin histograms, mean/std/skew per channel, saturation mean and spread."""
    flat = x.reshape(len(x), -1, 3)
    histograms = [histogram_rows(flat[:, :, c], COLOUR_EDGES) for c in range(3)]
    mean, std = flat.mean(axis=1), flat.std(axis=1) + 1e-6
    skew = ((flat - mean[:, None]) ** 3).mean(axis=1) / std ** 3
    saturation = flat.max(axis=2) - flat.min(axis=2)
    sat = np.stack([saturation.mean(axis=1), saturation.std(axis=1)], axis=1)
    return np.concatenate(histograms + [mean, std, skew, sat], axis=1)


@register_feature("pixels")
def pixels(x: np.ndarray) -> np.ndarray:
    """The image itself, channels first and flattened (the networks reshape it back)."""
    return x.transpose(0, 3, 1, 2).reshape(len(x), -1)
