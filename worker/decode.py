"""Untrusted bytes to one RGB image, or a :class:`DecodeError` saying what is wrong with them.

Every object in an archive is untrusted: it may be empty, not an image, truncated, a
decompression bomb, an animation, rotated by EXIF, or in any pixel mode. The checks run in the
order that keeps a bad object cheap: size from the header before any pixel is decoded, then a
full ``load()`` so a truncated file fails here (``ImageFile.LOAD_TRUNCATED_IMAGES`` is never
set: a half-grey image would be scored as if it were real content).
"""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

BACKGROUND = (255, 255, 255)  # transparent pixels are shown on white, as a viewer would
WIDE_INTEGER_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N", "F")

# What Pillow's format plugins raise on malformed input (see Pillow's own fuzzers). TypeError,
# AttributeError and NameError are deliberately absent: they mean a bug, which must fail loudly.
MALFORMED_INPUT = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError,
                   ZeroDivisionError)


class DecodeError(ValueError):
    """The object's bytes are not a usable image. ``str()`` is the reason stored in results."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """The first frame of ``data`` as an upright RGB image; DecodeError when it cannot be one."""
    if not data:
        raise DecodeError("empty", "the object has 0 bytes")
    image = _open(data)
    _check_pixels(image.size, max_pixels)
    try:
        image.seek(0)  # animations and multi-page files: the first frame is the picture
        image.load()
    except Image.DecompressionBombError as error:
        raise DecodeError("decompression-bomb", str(error)) from None
    except MALFORMED_INPUT as error:
        kind = image.format or "image"
        raise DecodeError("corrupt", f"truncated or corrupt {kind} data ({_first_line(error)})") from None
    return to_rgb(_upright(image))


def _open(data: bytes) -> ImageFile.ImageFile:
    try:
        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise DecodeError("not-an-image", f"no image format recognises these {len(data)} bytes") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # the warning only arrives here as an exception when warnings are errors (python -W error)
        raise DecodeError("decompression-bomb", _first_line(error)) from None
    except MALFORMED_INPUT as error:
        raise DecodeError("corrupt", f"unreadable image header ({_first_line(error)})") from None


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise DecodeError("corrupt", f"the header declares a {width}x{height} image")
    if width * height > max_pixels:
        raise DecodeError("decompression-bomb",
                          f"{width}x{height} = {width * height} pixels, over the {max_pixels}-pixel limit")


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a malformed EXIF block leaves the pixels as stored."""
    try:
        return ImageOps.exif_transpose(image)
    except MALFORMED_INPUT:
        return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB: alpha composited on white, 16/32-bit and float rescaled."""
    if image.mode == "RGB":
        return image
    if image.mode in WIDE_INTEGER_MODES:
        return Image.fromarray(_to_uint8(np.asarray(image)), "L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, BACKGROUND)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    try:
        return image.convert("RGB")
    except ValueError as error:  # a mode Pillow cannot convert (e.g. some LAB/HSV files)
        raise DecodeError("unsupported-mode", f"cannot convert {image.mode} pixels to RGB ({error})") from None


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Grey levels of any depth scaled to 0..255 from the range the data type can hold."""
    values = pixels.astype(np.float64)
    if pixels.dtype.kind == "f":
        top = 1.0 if values.size and np.nanmax(values) <= 1.0 else 255.0
    elif pixels.dtype.itemsize == 2:
        top = 65535.0
    else:  # mode "I" holds 8- or 16-bit data in 32-bit integers; the values tell which
        top = 255.0 if values.size and values.max() <= 255 else 65535.0
    return np.clip(np.nan_to_num(values) * (255.0 / top), 0, 255).round().astype(np.uint8)


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
