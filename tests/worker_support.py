"""Worker test helpers: generated images, the bad input an archive holds, detector folders.

Test-only detector families live in ``tests.worker_families`` (importing it registers them).
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fakescan.catalog import MANIFEST, DetectorRef


def detector_folder(parent: Path, name: str, family: str = "test-brightness", version: str = "1",
                    **options: Any) -> Path:
    folder = parent / name
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"name": name, "family": family, "version": version, **options}
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return folder


def ref_entry(folder: Path) -> dict[str, str]:
    """The ``scans.detectors`` entry the scheduler would store for this folder."""
    manifest = json.loads((folder / MANIFEST).read_text())
    return DetectorRef(manifest["name"], manifest["family"], str(manifest["version"]), str(folder)).as_json()


def image_bytes(index: int, fmt: str = "PNG") -> bytes:
    """A small distinct image (24-40 px, noise or gradient by index) encoded as ``fmt``."""
    rng = np.random.default_rng(index)
    width, height = 24 + index % 5 * 4, 24 + index % 3 * 8
    if index % 2:
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    else:
        ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None] * rng.uniform(0.2, 1.0, 3)
        pixels = np.broadcast_to(ramp, (height, width, 3)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, fmt)
    return buffer.getvalue()


def corrupt_objects() -> dict[str, bytes]:
    """Bad input an archive really holds, by key; the value is what the result's error kind must be."""
    jpeg = image_bytes(1, "JPEG")
    return {
        "bad/truncated.jpg": jpeg[: len(jpeg) // 2],
        "bad/empty.jpg": b"",
        "bad/text.jpg": b"this is a text file with a .jpg name\n",
        "bad/bomb.png": bomb_png(),
    }


CORRUPT_KINDS = {"bad/truncated.jpg": "corrupt", "bad/empty.jpg": "empty", "bad/text.jpg": "not-an-image",
                 "bad/bomb.png": "decompression-bomb"}


def bomb_png(side: int = 100_000) -> bytes:
    """A PNG header declaring side x side pixels with almost no data behind it."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))
