"""Untrusted bytes to one RGB image, or a :class:`DecodeError` saying what is wrong with them.

Every object in an archive is untrusted: it may be empty, not an image, truncated, a
decompression bomb, an animation, rotated by EXIF, or in any pixel mode. The checks run in the
order that keeps a bad object cheap: size from the header before any pixel is decoded, then a
full ``load()`` so a truncated file fails here (``ImageFile.LOAD_TRUNCATED_IMAGES`` is never
set: a half-grey image would be scored as if it were real content).
"""

from __future__ import annotations

import functools
import io
import struct
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError

BACKGROUND = (255, 255, 255)  # transparent pixels are shown on white, as a viewer would
WIDE_INTEGER_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N", "F")
REDUCIBLE_MODES = ("L", "LA", "RGB", "RGBA", "RGBX", "I", "F")  # averaging pixels means something in these

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


def decode_image(data: bytes, max_pixels: int, min_side: int | None = None) -> Image.Image:
    """The first frame of ``data`` as an upright sRGB image; DecodeError when it cannot be one.

    ``min_side``: the image may come out smaller than stored, but never below ``min_side`` pixels on
    either side (or its own size): JPEGs decode with DCT scaling, other formats are reduced right
    after decoding, before any conversion. None decodes at full resolution."""
    return finish_decode(open_image(data, max_pixels, min_side))


@dataclass
class OpenedImage:
    """An image whose header was read and checked, no pixel decoded yet (see :func:`open_image`)."""

    image: ImageFile.ImageFile
    data: bytes
    max_pixels: int
    min_side: int | None

    @property
    def size(self) -> tuple[int, int]:
        """What decoding will produce (after DCT scaling, before any reduction)."""
        return self.image.size


def open_image(data: bytes, max_pixels: int, min_side: int | None = None) -> OpenedImage:
    """The header read and checked; the pipeline reserves the decoded pixels before :func:`finish_decode`."""
    if not data:
        raise DecodeError("empty", "the object has 0 bytes")
    _configure_pillow(max_pixels)
    try:
        return OpenedImage(_opened(data, max_pixels, min_side), data, max_pixels, min_side)
    except DecodeError:
        stripped = png_without_text(data)  # hostile PNG text is provenance's business, not the pixels'
        if stripped is None:
            raise
        return OpenedImage(_opened(stripped, max_pixels, min_side), stripped, max_pixels, min_side)


def finish_decode(opened: OpenedImage) -> Image.Image:
    """Decode what :func:`open_image` opened into an upright sRGB image (scaled as it asked)."""
    try:
        image = _loaded(opened.image)
    except DecodeError:
        stripped = png_without_text(opened.data)
        if stripped is None:
            raise
        image = _loaded(_opened(stripped, opened.max_pixels, opened.min_side))  # text after the header
    return to_rgb(to_srgb(_upright(reduced(image, opened.min_side))))


def _opened(data: bytes, max_pixels: int, min_side: int | None) -> ImageFile.ImageFile:
    image = _open(data)
    _check_pixels(image.size, max_pixels)
    if min_side:
        draft_jpeg(image, min_side)
    return image


def _loaded(image: ImageFile.ImageFile) -> ImageFile.ImageFile:
    try:
        image.seek(0)  # animations and multi-page files: the first frame (or page) is the picture
        image.load()
    except Image.DecompressionBombError as error:
        raise DecodeError("decompression-bomb", str(error)) from None
    except MALFORMED_INPUT as error:
        kind = image.format or "image"
        raise DecodeError("corrupt", f"truncated or corrupt {kind} data ({_first_line(error)})") from None
    return image


def draft_jpeg(image: ImageFile.ImageFile, min_side: int) -> None:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 scale (DCT scaling) while both sides stay >= min_side.

    Square on purpose: a detector that squeezes the image to its input needs ``min_side`` on each
    side, and EXIF orientation may swap width and height after decoding."""
    if image.format == "JPEG":
        image.draft(image.mode, (min_side, min_side))


def reduced(image: Image.Image, min_side: int | None) -> Image.Image:
    """The decoded image box-reduced by the largest integer factor that keeps both sides >= min_side."""
    factor = min(image.size) // min_side if min_side else 1
    if factor < 2 or image.mode not in REDUCIBLE_MODES:  # palette indices cannot be averaged
        return image
    return image.reduce(factor)


PILLOW_HEADROOM = 4  # Pillow warns past MAX_IMAGE_PIXELS and raises past twice that


def _configure_pillow(max_pixels: int) -> None:
    """Pillow's own pixel limit follows the setting: its default would cap FAKESCAN_MAX_IMAGE_PIXELS
    silently at ~179 MP. It stays above ours (which checks the header first and says the size) as
    a backstop for frames Pillow sizes later. HEIF/HEIC support is registered once."""
    limit = max_pixels * PILLOW_HEADROOM
    if Image.MAX_IMAGE_PIXELS != limit:
        Image.MAX_IMAGE_PIXELS = limit
    _register_heif()


@functools.cache
def _register_heif() -> bool:
    """HEIC/HEIF through pillow-heif (AVIF is Pillow's own since 11.2); False when it is not installed."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")


def png_without_text(data: bytes) -> bytes | None:
    """The PNG with its text chunks dropped (None: not a PNG, or no text to drop).

    A zTXt/iTXt chunk that inflates past Pillow's text limits fails the whole decode; the pixels
    do not depend on it, so the pixel detectors get the image without it."""
    if not data.startswith(PNG_SIGNATURE):
        return None
    kept, position, dropped = [data[:8]], 8, False
    while position + 8 <= len(data):
        length = struct.unpack(">I", data[position:position + 4])[0]
        end = position + 12 + length
        if data[position + 4:position + 8] in PNG_TEXT_CHUNKS:
            dropped = True
        else:
            kept.append(data[position:end])
        position = end
    kept.append(data[position:])
    return b"".join(kept) if dropped else None


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


SRGB = ImageCms.createProfile("sRGB")
PROFILED_MODES = {"RGB": "RGB", "CMYK": "RGB", "RGBA": "RGBA"}  # input mode -> mode after the transform


def to_srgb(image: Image.Image) -> Image.Image:
    """Pixels with an embedded ICC profile (Adobe RGB, Display P3, a CMYK press profile) converted
    through it to sRGB, the space detectors were trained on; a malformed or mismatched profile, or
    one that already is sRGB, leaves the pixels as stored."""
    icc = image.info.get("icc_profile")
    if not icc or image.mode not in PROFILED_MODES:
        return image
    transform = _srgb_transform(bytes(icc), image.mode)
    if transform is None:
        return image
    try:
        converted = ImageCms.applyTransform(image, transform)
    except (ImageCms.PyCMSError, ValueError, OSError):
        return image
    return converted if converted is not None else image


@functools.lru_cache(maxsize=32)
def _srgb_transform(icc: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if "srgb" in ImageCms.getProfileDescription(source).lower().replace(" ", ""):
            return None  # most camera JPEGs: converting would change nothing but the time spent
        return ImageCms.buildTransform(source, SRGB, mode, PROFILED_MODES[mode])
    except (ImageCms.PyCMSError, ValueError, OSError, TypeError):
        return None


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
