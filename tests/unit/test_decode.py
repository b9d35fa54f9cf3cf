"""decode_image: every kind of bad input gets a reason; every kind of good input becomes upright RGB."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from fakescan.decode import DecodeError, decode_image
from tests.worker_support import bomb_png

LIMIT = 64_000_000


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def noise(width: int = 48, height: int = 32, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def reason(data: bytes, max_pixels: int = LIMIT) -> DecodeError:
    with pytest.raises(DecodeError) as caught:
        decode_image(data, max_pixels)
    return caught.value


def test_zero_bytes_is_an_empty_object():
    error = reason(b"")
    assert error.kind == "empty" and str(error).startswith("empty: ")


def test_text_named_jpg_is_not_an_image():
    text = b"<html><body>404 Not Found</body></html>\n"
    error = reason(text)
    assert error.kind == "not-an-image"
    assert f"{len(text)} bytes" in str(error)


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_jpeg_is_corrupt_not_half_grey(keep):
    data = encode(noise(), "JPEG", quality=90)
    error = reason(data[: int(len(data) * keep)])
    assert error.kind == "corrupt"
    assert "JPEG" in str(error) and "truncated" in str(error)


def test_jpeg_cut_inside_its_header_is_corrupt():
    data = encode(noise(), "JPEG")
    assert reason(data[:120]).kind == "corrupt"


def test_truncated_png_is_corrupt():
    data = encode(noise(), "PNG")
    assert reason(data[: len(data) - 40]).kind == "corrupt"


def test_header_claiming_huge_dimensions_is_a_decompression_bomb_before_any_decoding():
    error = reason(bomb_png(100_000))
    assert error.kind == "decompression-bomb"


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_header_between_pillow_warning_and_our_limit_is_rejected_by_our_limit():
    error = reason(bomb_png(10_000))  # over our 64M limit, under Pillow's own error size
    assert error.kind == "decompression-bomb"
    assert "10000x10000" in str(error) and str(LIMIT) in str(error)


def test_a_real_image_over_max_pixels_is_rejected_from_its_header():
    data = encode(Image.new("RGB", (2000, 2000), (10, 20, 30)), "PNG")
    assert len(data) < 50_000  # tiny on the wire, 4 megapixels once decoded
    error = reason(data, max_pixels=1_000_000)
    assert error.kind == "decompression-bomb" and "2000x2000" in str(error)
    assert decode_image(data, max_pixels=4_000_000).size == (2000, 2000)


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (16, 12), colour) for colour in ((250, 0, 0), (0, 0, 250), (0, 250, 0))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=80, loop=0)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    image = decode_image(data, LIMIT)
    assert image.mode == "RGB" and image.size == (16, 12)
    red, green, blue = image.getpixel((8, 6))
    assert red > 200 and green < 50 and blue < 50


def test_exif_orientation_is_applied():
    source = Image.new("RGB", (40, 20), (0, 0, 255))
    source.paste((255, 0, 0), (0, 0, 20, 20))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    image = decode_image(encode(source, "JPEG", quality=95, exif=exif), LIMIT)
    assert image.size == (20, 40)
    top, bottom = image.getpixel((10, 5)), image.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60  # the left half is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_rgba_is_composited_on_white():
    source = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    source.paste((0, 128, 0, 255), (0, 0, 5, 10))
    image = decode_image(encode(source, "PNG"), LIMIT)
    assert image.mode == "RGB"
    assert image.getpixel((8, 5)) == (255, 255, 255)  # transparent red shows as white
    assert image.getpixel((2, 5)) == (0, 128, 0)


def test_grey_with_alpha_is_composited_on_white():
    source = Image.new("LA", (6, 6), (0, 0))
    source.paste((40, 255), (0, 0, 3, 6))
    image = decode_image(encode(source, "PNG"), LIMIT)
    assert image.getpixel((1, 1)) == (40, 40, 40) and image.getpixel((5, 5)) == (255, 255, 255)


def test_palette_with_a_transparent_index_is_composited_on_white():
    source = Image.new("P", (8, 8), 1)
    source.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    source.paste(0, (0, 0, 4, 8))
    data = encode(source, "PNG", transparency=0)
    image = decode_image(data, LIMIT)
    assert image.getpixel((1, 1)) == (255, 255, 255) and image.getpixel((6, 6)) == (200, 30, 30)


def test_cmyk_jpeg_becomes_rgb():
    image = decode_image(encode(Image.new("CMYK", (12, 12), (0, 255, 255, 0)), "JPEG", quality=95), LIMIT)
    red, green, blue = image.getpixel((6, 6))
    assert image.mode == "RGB" and red > 200 and green < 60 and blue < 60


def test_16_bit_grey_png_is_rescaled_not_clipped_to_white():
    ramp = np.linspace(0, 65535, 64, dtype=np.uint16)[None, :].repeat(8, axis=0)
    data = encode(Image.fromarray(ramp), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    row = np.asarray(decode_image(data, LIMIT))[4, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255
    assert np.all(np.diff(row) >= 0) and len(set(row.tolist())) > 32  # a ramp, not a step to white


def test_float_tiff_in_unit_range_is_rescaled():
    pixels = np.linspace(0.0, 1.0, 50, dtype=np.float32)[None, :].repeat(4, axis=0)
    row = np.asarray(decode_image(encode(Image.fromarray(pixels, "F"), "TIFF"), LIMIT))[0, :, 0]
    assert row[0] == 0 and row[-1] == 255


def test_bilevel_image_becomes_rgb():
    image = decode_image(encode(Image.new("1", (9, 9), 1), "PNG"), LIMIT)
    assert image.mode == "RGB" and image.getpixel((4, 4)) == (255, 255, 255)


def test_plain_rgb_keeps_its_pixels():
    source = noise(seed=3)
    image = decode_image(encode(source, "PNG"), LIMIT)
    assert image.mode == "RGB" and np.array_equal(np.asarray(image), np.asarray(source))
