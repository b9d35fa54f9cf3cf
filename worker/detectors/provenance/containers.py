"""Bounded readers of the metadata parts of image files; pixel data is skipped, never decoded.

PNG chunks, JPEG segments and WebP RIFF chunks are walked by hand so every size is checked
before anything is read or inflated; other formats go through Pillow's lazy header parsing. A
file whose metadata breaks a limit or its container's structure raises :class:`HostileMetadata`.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field

from PIL import Image, UnidentifiedImageError

MAX_TEXT_BYTES = 2 * 1024 * 1024  # one text chunk, stored or inflated; ComfyUI workflows stay well below
MAX_TOTAL_TEXT_BYTES = 8 * 1024 * 1024
MAX_XMP_BYTES = 4 * 1024 * 1024
MAX_EXIF_BYTES = 1024 * 1024
MAX_METADATA_PARTS = 1024  # chunks/segments other than pixel data

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
XMP_KEY = "XML:com.adobe.xmp"
JPEG_XMP = b"http://ns.adobe.com/xap/1.0/\x00"
JPEG_XMP_EXTENSION = b"http://ns.adobe.com/xmp/extension/\x00"


class HostileMetadata(ValueError):
    """Metadata that is oversized, malformed or structurally impossible: bad input, not evidence.

    The message starts with a kind, like the pipeline's other bad-input reasons ("corrupt: ...").
    """

    def __init__(self, detail: str, kind: str = "bad-metadata") -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


@dataclass
class RawMetadata:
    format: str
    texts: list[tuple[str, str, str]] = field(default_factory=list)  # (container part, key, value)
    exif: Image.Exif | None = None
    xmp: list[bytes] = field(default_factory=list)
    has_c2pa: bool = False
    _text_bytes: int = 0
    _parts: int = 0

    def add_text(self, part: str, key: str, value: str) -> None:
        self._text_bytes += len(value)
        if self._text_bytes > MAX_TOTAL_TEXT_BYTES:
            raise HostileMetadata(f"text metadata exceeds {MAX_TOTAL_TEXT_BYTES} bytes in total")
        self.texts.append((part, key, value))

    def add_xmp(self, packet: bytes) -> None:
        if sum(map(len, self.xmp)) + len(packet) > MAX_XMP_BYTES:
            raise HostileMetadata(f"XMP exceeds {MAX_XMP_BYTES} bytes")
        self.xmp.append(packet)

    def set_exif(self, payload: bytes) -> None:
        if len(payload) > MAX_EXIF_BYTES:
            raise HostileMetadata(f"EXIF block of {len(payload)} bytes exceeds {MAX_EXIF_BYTES}")
        exif = Image.Exif()
        try:
            exif.load(payload)
        except Exception as error:  # Pillow raises assorted types on broken IFDs
            raise HostileMetadata(f"malformed EXIF: {type(error).__name__}: {error}") from None
        self.exif = exif

    def count_part(self) -> None:
        self._parts += 1
        if self._parts > MAX_METADATA_PARTS:
            raise HostileMetadata(f"more than {MAX_METADATA_PARTS} metadata chunks")


def read_metadata(data: bytes) -> RawMetadata:
    if data.startswith(PNG_SIGNATURE):
        return _read_png(data)
    if data.startswith(b"\xff\xd8"):
        return _read_jpeg(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _read_webp(data)
    return _read_other(data)


def _inflate(payload: bytes, what: str) -> bytes:
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(payload, MAX_TEXT_BYTES + 1)
    except zlib.error as error:
        raise HostileMetadata(f"{what}: corrupt compressed text ({error})") from None
    if len(text) > MAX_TEXT_BYTES or inflater.unconsumed_tail:
        raise HostileMetadata(f"{what}: compressed text inflates beyond {MAX_TEXT_BYTES} bytes")
    return text


def _split_key(body: bytes, what: str) -> tuple[str, bytes]:
    key, separator, rest = body.partition(b"\x00")
    if not separator or not 1 <= len(key) <= 79:
        raise HostileMetadata(f"{what}: malformed keyword")
    return key.decode("latin-1"), rest


def _png_text(meta: RawMetadata, kind: str, body: bytes) -> None:
    what = f"PNG {kind} chunk"
    key, rest = _split_key(body, what)
    if kind == "tEXt":
        value = rest.decode("latin-1")
    elif kind == "zTXt":
        value = _inflate(rest[1:], what).decode("latin-1")
    else:  # iTXt: flag, method, language\0, translated keyword\0, text
        if len(rest) < 2:
            raise HostileMetadata(f"{what}: truncated header")
        compressed, parts = rest[0], rest[2:].split(b"\x00", 2)
        if len(parts) != 3:
            raise HostileMetadata(f"{what}: malformed language or translated keyword")
        raw = _inflate(parts[2], what) if compressed else parts[2]
        if key == XMP_KEY:
            meta.add_xmp(raw)
            return
        value = raw.decode("utf-8", errors="replace")
    meta.add_text(f"png:{kind}", key, value)


def _read_png(data: bytes) -> RawMetadata:
    meta, position = RawMetadata("png"), len(PNG_SIGNATURE)
    while position + 8 <= len(data):
        length, kind_bytes = struct.unpack(">I4s", data[position:position + 8])
        kind = kind_bytes.decode("latin-1")
        end = position + 8 + length
        if length > 0x7FFFFFFF or end + 4 > len(data):
            raise HostileMetadata(f"PNG {kind!r} chunk of {length} bytes runs past the end of the file")
        if kind in ("tEXt", "zTXt", "iTXt", "eXIf", "caBX"):
            meta.count_part()
            if length > MAX_TEXT_BYTES:
                raise HostileMetadata(f"PNG {kind} chunk of {length} bytes exceeds the {MAX_TEXT_BYTES} byte limit")
            body = data[position + 8:end]
            if kind == "eXIf":
                meta.set_exif(body)
            elif kind == "caBX":
                meta.has_c2pa = True
            else:
                _png_text(meta, kind, body)
        elif kind == "IEND":
            return meta
        position = end + 4  # skip the CRC
    raise HostileMetadata("PNG ends without an IEND chunk (truncated)")


def _read_jpeg(data: bytes) -> RawMetadata:
    meta, position = RawMetadata("jpeg"), 2
    extended: dict[bytes, dict[int, bytes]] = {}
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            raise HostileMetadata(f"JPEG marker expected at byte {position}")
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            position += 2
            continue
        if marker in (0xDA, 0xD9):  # start of scan: metadata precedes the pixels
            _join_extended_xmp(meta, extended)
            return meta
        (length,) = struct.unpack(">H", data[position + 2:position + 4])
        if length < 2 or position + 2 + length > len(data):
            raise HostileMetadata(f"JPEG segment 0xFF{marker:02X} at byte {position} is truncated")
        meta.count_part()
        _jpeg_segment(meta, marker, data[position + 4:position + 2 + length], extended)
        position += 2 + length
    raise HostileMetadata("JPEG ends before its image data (truncated)")


def _jpeg_segment(meta: RawMetadata, marker: int, body: bytes, extended: dict[bytes, dict[int, bytes]]) -> None:
    if marker == 0xE1 and body.startswith(b"Exif\x00\x00") and meta.exif is None:
        meta.set_exif(body)
    elif marker == 0xE1 and body.startswith(JPEG_XMP):
        meta.add_xmp(body[len(JPEG_XMP):])
    elif marker == 0xE1 and body.startswith(JPEG_XMP_EXTENSION):
        rest = body[len(JPEG_XMP_EXTENSION):]
        if len(rest) < 40:
            raise HostileMetadata("extended XMP segment is truncated")
        guid, (total, offset) = rest[:32], struct.unpack(">II", rest[32:40])
        if total > MAX_XMP_BYTES:
            raise HostileMetadata(f"extended XMP of {total} bytes exceeds {MAX_XMP_BYTES}")
        extended.setdefault(guid, {})[offset] = rest[40:]
    elif marker == 0xEB and body[:2] == b"JP":
        meta.has_c2pa = True
    elif marker == 0xFE:
        meta.add_text("jpeg:COM", "comment", body.decode("utf-8", errors="replace"))


def _join_extended_xmp(meta: RawMetadata, extended: dict[bytes, dict[int, bytes]]) -> None:
    for parts in extended.values():
        meta.add_xmp(b"".join(parts[offset] for offset in sorted(parts)))


def _read_webp(data: bytes) -> RawMetadata:
    meta, position = RawMetadata("webp"), 12
    while position + 8 <= len(data):
        kind, length = data[position:position + 4], struct.unpack("<I", data[position + 4:position + 8])[0]
        end = position + 8 + length
        if end > len(data):
            raise HostileMetadata(f"WebP {kind!r} chunk of {length} bytes runs past the end of the file")
        body = data[position + 8:end]
        if kind == b"EXIF":
            meta.count_part()
            meta.set_exif(body)
        elif kind == b"XMP ":
            meta.count_part()
            meta.add_xmp(body)
        elif kind == b"C2PA":
            meta.has_c2pa = True
        position = end + (length & 1)
    return meta


def _read_other(data: bytes) -> RawMetadata:
    """TIFF, GIF, HEIF, AVIF ...: Pillow parses headers on open and leaves the pixels alone."""
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise HostileMetadata("no image format recognises these bytes", kind="not-an-image") from None
    except Exception as error:
        raise HostileMetadata(f"unreadable image header: {type(error).__name__}: {error}") from None
    with image:
        meta = RawMetadata((image.format or "unknown").lower(), has_c2pa=b"c2pa" in data)
        for key, value in image.info.items():
            if key == "xmp" and isinstance(value, bytes):
                meta.add_xmp(value)
            elif isinstance(value, str):
                meta.add_text(f"{meta.format}:info", str(key), value)
        try:
            exif = image.getexif()
        except Exception as error:
            raise HostileMetadata(f"malformed EXIF: {type(error).__name__}: {error}") from None
        meta.exif = exif if len(exif) else None
    return meta
