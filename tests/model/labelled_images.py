"""Tiny labelled sets written in code: smooth "real" scenes, "fake" ones with a planted grid."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from tests.model.ensemble_images import planted_anomalies, smooth_scenes


def encoded(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")  # lossless: the planted grid survives
    return buffer.getvalue()


def labelled_files(per_class: int, seed: int = 0, real_dir: str = "REAL", fake_dir: str = "fake") -> dict[str, bytes]:
    """Relative path → PNG bytes; folder names in mixed case on purpose."""
    files = {}
    classes = ((real_dir, smooth_scenes(per_class, seed)), (fake_dir, planted_anomalies(per_class, seed + 1)))
    for folder, images in classes:
        for index, pixels in enumerate(images):
            files[f"{folder}/{index:03d}.png"] = encoded(pixels)
    return files


def write_folder(root: Path, files: dict[str, bytes]) -> Path:
    for key, data in files.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    return root


def write_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for key, data in files.items():
            archive.writestr(key, data)
    return path
