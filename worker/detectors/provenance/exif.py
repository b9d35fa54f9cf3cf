"""EXIF fields: generator names and parameters, and camera make/model (weak evidence of capture)."""

from __future__ import annotations

from typing import Any

from PIL import Image

from worker.detectors.provenance.containers import HostileMetadata
from worker.detectors.provenance.matching import camera_maker, generator_named
from worker.detectors.provenance.signals import Signal
from worker.detectors.provenance.texts import a1111_parameters

MAX_EXIF_TAGS = 2000
MAX_EXIF_STRING = 64 * 1024
EXIF_IFD = 0x8769
# tag id -> name, for the free-text fields a generator may sign its name in
NAME_FIELDS = {0x010F: "Make", 0x0110: "Model", 0x0131: "Software", 0x010E: "ImageDescription",
               0x013B: "Artist", 0x9C9C: "XPComment", 0x9286: "UserComment"}
CAPTURE_FIELDS = {0x829A: "ExposureTime", 0x829D: "FNumber", 0x8827: "ISOSpeedRatings",
                  0x9003: "DateTimeOriginal", 0xA434: "LensModel"}
USER_COMMENT_CHARSETS = {b"ASCII\x00\x00\x00": "ascii", b"UNICODE\x00": "utf-16",
                         b"JIS\x00\x00\x00\x00\x00": "shift_jis"}


def exif_signals(exif: Image.Exif) -> list[Signal]:
    fields = _fields(exif)
    signals: list[Signal] = []
    comment = fields.get("UserComment", "")
    parameters = a1111_parameters(comment) if comment else None
    if parameters is not None:
        signals.append(Signal("generator-parameters", "exif", "UserComment", _line(comment),
                              "AUTOMATIC1111-style web UI", details=parameters))
    for name, value in fields.items():
        if name in CAPTURE_FIELDS.values() or (name == "UserComment" and parameters is not None):
            continue
        generator = generator_named(value)
        if generator:
            signals.append(Signal("generator-name", "exif", name, value, generator))
    make, model = fields.get("Make", ""), fields.get("Model", "")
    if make and model and camera_maker(make) and not generator_named(make + " " + model):
        capture = {name: fields[name] for name in CAPTURE_FIELDS.values() if name in fields}
        signals.append(Signal("camera-exif", "exif", "Make/Model", f"{make} {model}".strip(), details=capture))
    return signals


def _fields(exif: Image.Exif) -> dict[str, str]:
    try:
        sub_ifd = exif.get_ifd(EXIF_IFD)
    except Exception as error:  # broken offsets, loops: Pillow raises assorted types
        raise HostileMetadata(f"malformed EXIF sub-IFD: {type(error).__name__}: {error}") from None
    if len(exif) + len(sub_ifd) > MAX_EXIF_TAGS:
        raise HostileMetadata(f"EXIF holds {len(exif) + len(sub_ifd)} tags, more than {MAX_EXIF_TAGS}")
    found: dict[str, str] = {}
    for tags in (exif, sub_ifd):
        for tag, name in (NAME_FIELDS | CAPTURE_FIELDS).items():
            if tag in tags:
                text = _as_text(tag, tags[tag])
                if len(text) > MAX_EXIF_STRING:
                    raise HostileMetadata(f"EXIF {name} is {len(text)} characters long")
                if text:
                    found[name] = text
    return found


def _as_text(tag: int, value: Any) -> str:
    if isinstance(value, bytes):
        if tag == 0x9C9C:  # XPComment: UTF-16LE, NUL-terminated
            return value.decode("utf-16-le", errors="replace").rstrip("\x00").strip()
        if tag == 0x9286:
            return _user_comment(value)
        return value.decode("utf-8", errors="replace").rstrip("\x00").strip()
    if isinstance(value, tuple):
        return " ".join(str(part) for part in value[:16])
    return str(value).rstrip("\x00").strip()


def _user_comment(value: bytes) -> str:
    """UserComment starts with an 8-byte character code; A1111 writes UNICODE (UTF-16, either order)."""
    charset, body = value[:8], value[8:]
    encoding = USER_COMMENT_CHARSETS.get(charset)
    if encoding == "utf-16":
        big_endian = len(body) > 1 and body[0] == 0 and body[1] != 0
        encoding = "utf-16-be" if big_endian else "utf-16-le"
    if encoding is None:
        body, encoding = value, "utf-8"
    return body.decode(encoding, errors="replace").rstrip("\x00").strip()


def _line(text: str) -> str:
    return text.strip().splitlines()[-1] if text.strip() else ""
