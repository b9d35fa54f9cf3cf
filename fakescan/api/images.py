"""Images through the service: read from the store with the worker's limits, decoded by the scan's decoder.

The browser never needs S3 credentials. ``fakescan.decode`` is the one decoder (numpy + Pillow, no
torch), so a bomb, a truncated file or a non-image is refused here by the same rules that turned
it into an error row at scan time; the thumbnail is then a placeholder carrying the reason.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

from fakescan.decode import DecodeError, decode_image
from fakescan.settings import Settings
from fakescan.storage import ObjectTooLarge, Store, open_store

SAFE_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp"}


class ObjectGone(LookupError):
    """The object is in the results database but no longer in its store."""


@dataclass
class Stores:
    """One store (one S3 client) per root, shared by the request threads."""

    settings: Settings
    _stores: dict[str, Store] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def read(self, root: str, key: str) -> bytes:
        with self._lock:
            store = self._stores.get(root)
            if store is None:
                store = self._stores[root] = open_store(root, self.settings)
        try:
            return store.read(key, self.settings.max_object_bytes)
        except FileNotFoundError:
            raise ObjectGone(f"{key!r} is no longer in {root}") from None
        except ObjectTooLarge as error:
            raise DecodeError("too-large", str(error)) from None
        except Exception as error:
            if _missing_on_s3(error):
                raise ObjectGone(f"{key!r} is no longer in {root}") from None
            raise


def _missing_on_s3(error: Exception) -> bool:
    response = getattr(error, "response", None)
    code = (response or {}).get("Error", {}).get("Code") if isinstance(response, dict) else None
    return code in ("NoSuchKey", "404", "NotFound")


def thumbnail(data: bytes, edge: int, max_pixels: int) -> bytes:
    """A JPEG no larger than ``edge`` on either side; DecodeError when the bytes are no usable image."""
    image = decode_image(data, max_pixels)
    image.thumbnail((edge, edge))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def original(data: bytes, max_pixels: int) -> tuple[bytes, str]:
    """The stored bytes when they decode and are a format browsers show safely; else a PNG of the pixels."""
    image = decode_image(data, max_pixels)
    stored_format = Image.open(io.BytesIO(data)).format or ""
    if stored_format in SAFE_FORMATS:
        return data, SAFE_FORMATS[stored_format]
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue(), "image/png"


def placeholder(edge: int) -> bytes:
    """A grey square with a red cross: what the page shows for an object that does not decode."""
    side = max(16, min(edge, 256))
    image = Image.new("RGB", (side, side), (200, 200, 200))
    draw = ImageDraw.Draw(image)
    draw.line((0, 0, side, side), fill=(180, 30, 30), width=4)
    draw.line((0, side, side, 0), fill=(180, 30, 30), width=4)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
