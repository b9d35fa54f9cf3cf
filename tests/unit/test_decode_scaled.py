"""Scaled decoding: never below the size a detector needs, never a different picture."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from fakescan.decode import decode_image, open_image


def encoded(width: int, height: int, fmt: str = "JPEG", mode: str = "RGB", **save: object) -> bytes:
    ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None] * np.ones((height, 1, 3), np.float32)
    image = Image.fromarray(ramp.astype(np.uint8), "RGB").convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


@pytest.mark.parametrize(("side", "expected"), [(None, (4000, 3000)), (1000, (2000, 1500)), (224, (500, 375)),
                                                (32, (46, 35))])
def test_a_jpeg_decodes_at_the_smallest_dct_scale_at_or_above_the_need(side, expected):
    image = decode_image(encoded(4000, 3000), 64_000_000, side)
    assert image.size == expected and image.mode == "RGB"
    if side:
        assert min(image.size) >= side


def test_the_header_tells_the_scaled_size_before_any_pixel_is_decoded():
    assert open_image(encoded(4000, 3000), 64_000_000, 224).size == (500, 375)


def test_exif_rotation_keeps_both_sides_at_or_above_the_need():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    image = decode_image(encoded(1600, 400, exif=exif.tobytes()), 64_000_000, 96)
    assert image.size == (100, 400)  # 1/4 scale (400/4 = 100 >= 96), then turned upright
    assert min(image.size) >= 96


@pytest.mark.parametrize(("fmt", "mode"), [("PNG", "RGB"), ("PNG", "RGBA"), ("PNG", "L"), ("WEBP", "RGB")])
def test_other_formats_are_reduced_before_conversion_and_keep_the_picture(fmt, mode):
    data = encoded(800, 600, fmt, mode)
    full = decode_image(data, 64_000_000)
    scaled = decode_image(data, 64_000_000, 150)
    assert scaled.size == (200, 150) and scaled.mode == "RGB"
    reference = np.asarray(full.resize(scaled.size, Image.Resampling.BOX), dtype=np.float32)
    assert np.abs(np.asarray(scaled, dtype=np.float32) - reference).mean() < 2.0


def test_palette_images_are_not_averaged():
    data = encoded(800, 600, "PNG", "P")
    assert decode_image(data, 64_000_000, 150).size == (800, 600)


def test_an_image_smaller_than_the_need_is_left_as_it_is():
    assert decode_image(encoded(100, 80), 64_000_000, 224).size == (100, 80)
