"""``fakescan explain``: a detector's explanation overlays (Grad-CAM, attention) for one image, as PNGs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fakescan.decode import DecodeError, decode_image
from fakescan.errors import DataError, UsageError
from fakescan.settings import Settings
from fakescan.storage import open_store, parse_s3_uri
from worker.lab.evaluate import open_detector


def read_image_bytes(location: str, settings: Settings) -> bytes:
    if location.startswith("s3://"):
        bucket, key = parse_s3_uri(location)
        return open_store(f"s3://{bucket}", settings).read(key, settings.max_object_bytes)
    path = Path(location).expanduser()
    if not path.is_file():
        raise UsageError(f"no such image: {location}")
    return path.read_bytes()


def explain(spec: str, location: str, out: Path, settings: Settings) -> dict[str, Any]:
    detector = open_detector(spec, settings)
    try:
        image = decode_image(read_image_bytes(location, settings), settings.max_image_pixels)
    except DecodeError as error:
        raise DataError(f"cannot decode {location}: {error}") from None
    overlays = detector.explain(image)
    if not overlays:
        raise UsageError(f"detector {detector.name!r} (family {detector.family}) has no explanation maps")
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(location.rstrip("/")).stem or "image"
    written = {}
    for name, overlay in sorted(overlays.items()):
        path = out / f"{stem}.{name}.png"
        overlay.save(path, format="PNG")
        written[name] = str(path)
    score = detector.predict([image])[0].score
    return {"image": location, "detector": detector.name, "version": detector.version, "score": score,
            "verdict": detector.verdict(score), "overlays": written}
