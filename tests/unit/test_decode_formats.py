"""Formats real archives hold, each made here: HEIC, AVIF, animated WebP, multi-page TIFF, CMYK and
ICC-profiled JPEG; and hostile PNG text or a large pixel limit that must not fail the pixels."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms

from fakescan.decode import decode_image, png_without_text
from tests.worker_support import bomb_png

LIMIT = 64_000_000
RED, BLUE = (230, 20, 20), (20, 20, 230)


def encode(image: Image.Image | list[Image.Image], fmt: str, **options: object) -> bytes:
    frames = image if isinstance(image, list) else [image]
    buffer = io.BytesIO()
    if len(frames) > 1:
        options.update(save_all=True, append_images=frames[1:])
    frames[0].save(buffer, fmt, **options)
    return buffer.getvalue()


def mean_colour(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32).reshape(-1, 3).mean(axis=0)


def close_to(image: Image.Image, colour: tuple[int, int, int], tolerance: float = 12) -> bool:
    return bool(np.all(np.abs(mean_colour(image) - np.array(colour)) <= tolerance))


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_heic_and_avif_decode_to_rgb(fmt: str) -> None:
    if fmt == "HEIF":
        import pillow_heif  # a dependency of fakescan (pyproject.toml)

        pillow_heif.register_heif_opener()  # to write the file; the decoder registers it itself
    data = encode(Image.new("RGB", (64, 48), RED), fmt, quality=90)
    image = decode_image(data, LIMIT)
    assert (image.mode, image.size) == ("RGB", (64, 48)) and close_to(image, RED)


@pytest.mark.parametrize("fmt", ["WEBP", "TIFF"])
def test_animated_webp_and_multi_page_tiff_give_their_first_frame(fmt: str) -> None:
    options = {"lossless": True, "duration": 100} if fmt == "WEBP" else {}
    data = encode([Image.new("RGB", (40, 30), RED), Image.new("RGB", (40, 30), BLUE)], fmt, **options)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    image = decode_image(data, LIMIT)
    assert image.size == (40, 30) and close_to(image, RED, tolerance=2)


def test_a_cmyk_jpeg_becomes_rgb() -> None:
    data = encode(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG", quality=95)  # full magenta + yellow
    image = decode_image(data, LIMIT)
    assert image.mode == "RGB" and close_to(image, (255, 0, 0), tolerance=8)


def swapped_primaries_profile() -> bytes:
    """An RGB matrix profile whose red colorant is sRGB's green and vice versa (made from lcms's sRGB)."""
    profile = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    tags = {}
    for index in range(struct.unpack(">I", profile[128:132])[0]):
        signature, offset, size = struct.unpack(">4sII", profile[132 + 12 * index:144 + 12 * index])
        tags[signature] = (offset, size)
    (red, red_size), (green, green_size) = tags[b"rXYZ"], tags[b"gXYZ"]
    red_data, green_data = bytes(profile[red:red + red_size]), bytes(profile[green:green + green_size])
    profile[red:red + red_size], profile[green:green + green_size] = green_data, red_data
    # renamed (ASCII and UTF-16 descriptions), so the decoder does not take it for sRGB
    return bytes(profile).replace(b"sRGB", b"swap").replace("sRGB".encode("utf-16-be"), "swap".encode("utf-16-be"))


def test_an_icc_profiled_jpeg_is_converted_through_its_profile_to_srgb() -> None:
    data = encode(Image.new("RGB", (32, 32), (255, 0, 0)), "JPEG", quality=95, icc_profile=swapped_primaries_profile())
    assert Image.open(io.BytesIO(data)).info.get("icc_profile")
    red, green, blue = mean_colour(decode_image(data, LIMIT))
    assert green > 200 and red < 60 and blue < 60  # stored red means this profile's red: sRGB green


def test_a_malformed_or_srgb_profile_leaves_the_pixels_as_stored() -> None:
    for icc in (b"not an icc profile at all", ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()):
        data = encode(Image.new("RGB", (16, 16), RED), "PNG", icc_profile=icc)
        assert close_to(decode_image(data, LIMIT), RED, tolerance=0.5)


def png_with_text_chunk(kind: bytes, payload: bytes, after_pixels: bool) -> bytes:
    data = encode(Image.new("RGB", (24, 16), BLUE), "PNG")
    chunk = struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    marker = data.index(b"IEND") - 4 if after_pixels else data.index(b"IDAT") - 4
    return data[:marker] + chunk + data[marker:]


@pytest.mark.parametrize("kind", [b"zTXt", b"iTXt"])
@pytest.mark.parametrize("after_pixels", [False, True], ids=["before-IDAT", "after-IDAT"])
def test_png_text_inflating_past_pillows_limit_does_not_fail_the_pixels(kind: bytes, after_pixels: bool) -> None:
    bomb = zlib.compress(b"A" * 4_000_000, 9)  # ~4 KB that inflates to 4 MB, past MAX_TEXT_CHUNK (1 MB)
    payload = b"Comment\0\0" + bomb if kind == b"zTXt" else b"Comment\0\x01\0\0\0" + bomb
    data = png_with_text_chunk(kind, payload, after_pixels)
    with pytest.raises(ValueError, match="too large|Too much"):
        Image.open(io.BytesIO(data)).load()  # what Pillow does with it
    image = decode_image(data, LIMIT)
    assert image.size == (24, 16) and close_to(image, BLUE, tolerance=0.5)
    assert png_without_text(data) is not None and png_without_text(encode(Image.new("L", (4, 4)), "PNG")) is None


def test_pillows_own_pixel_limit_does_not_cap_the_setting() -> None:
    """A 210 MP header (over Pillow's default 179 MP cap) under a 300 MP setting: not refused as a bomb
    (it is refused as what it is, a header with no pixels behind it)."""
    data = bomb_png(14_500)
    with pytest.raises(Exception) as caught:
        decode_image(data, 300_000_000)
    assert str(caught.value).startswith("corrupt:")
    with pytest.raises(Exception, match="decompression-bomb"):
        decode_image(data, 200_000_000)
