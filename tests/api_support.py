"""A scanned fixture set for the API tests: a real embedded scan of an S3 bucket into a real database.

The bucket holds images whose brightness spreads over [0, 1] (the ``test-brightness`` detector
scores exactly that), bad input of every kind, and a C2PA-signed AI image (provenance runs
first, so its evidence and the signer badge are real). The scan is the real ``fakescan scan``.
"""

from __future__ import annotations

import io
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import numpy as np
import pytest
from PIL import Image

import tests.worker_families  # noqa: F401  (registers the test-brightness family)
from fakescan.cli import main
from fakescan.db import scans
from fakescan.db.engine import make_engine, make_sessionmaker
from fakescan.settings import Settings, load_settings
from tests import provenance_support
from tests.worker_support import CORRUPT_KINDS, corrupt_objects, detector_folder

BRIGHT_IMAGES = 24
SIGNED_KEY = "signed/c2pa-ai.jpg"


def brightness_png(index: int, count: int = BRIGHT_IMAGES) -> bytes:
    """A 40x32 image whose mean brightness is about (index + 0.5) / count, with a little noise."""
    rng = np.random.default_rng(index)
    level = (index + 0.5) / count * 255
    pixels = np.clip(level + rng.normal(0, 6, (32, 40, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, "PNG")
    return buffer.getvalue()


@dataclass
class ScannedSet:
    bucket: str
    scan_id: int
    keys: dict[str, bytes] = field(default_factory=dict)


def fixture_objects() -> dict[str, bytes]:
    objects = {f"{'dark' if index < BRIGHT_IMAGES // 2 else 'light'}/img{index:02d}.png": brightness_png(index)
               for index in range(BRIGHT_IMAGES)}
    objects.update(corrupt_objects())
    signer = provenance_support.TestSigner.create("fakescan test signer")
    bright = Image.new("RGB", (48, 32), (250, 250, 250))
    objects[SIGNED_KEY] = signer.sign(provenance_support.jpeg(image=bright), "image/jpeg", "trainedAlgorithmicMedia")
    return objects


def scan_bucket(s3_url: str, database_url: str, home: Path) -> tuple[Settings, ScannedSet]:
    """A fresh bucket with the fixture set, then ``fakescan scan s3://bucket`` in-process (embedded mode)."""
    bucket = f"api-{uuid.uuid4().hex[:10]}"
    client = boto3.client("s3", endpoint_url=s3_url)
    client.create_bucket(Bucket=bucket)
    objects = fixture_objects()
    for key, data in objects.items():
        client.put_object(Bucket=bucket, Key=key, Body=data)
    folder = detector_folder(home / "detectors", "bright", version="b1")
    environment = {"FAKESCAN_S3_ENDPOINT_URL": s3_url, "FAKESCAN_DATABASE_URL": database_url,
                   "FAKESCAN_HOME": str(home)}
    with pytest.MonkeyPatch.context() as patch:
        for name in [name for name in os.environ if name.startswith("FAKESCAN_")]:
            patch.delenv(name)
        for name, value in environment.items():
            patch.setenv(name, value)
        scan = ["scan", f"s3://{bucket}/", "--detector", str(folder), "--batch-size", "8"]
        if main(["db", "upgrade"]) != 0 or main(scan) != 0:
            raise RuntimeError("the fixture scan failed")
        settings = load_settings()
    engine = make_engine(settings)
    with make_sessionmaker(engine)() as session:
        scan_id = scans.latest_scan_id(session)
    engine.dispose()
    return settings, ScannedSet(bucket, scan_id, objects)


def expected_kinds() -> dict[str, str]:
    return dict(CORRUPT_KINDS)
