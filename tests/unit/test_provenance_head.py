"""A provenance-only scan reads each object's head and the rest only when the evidence needs it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fakescan.catalog import resolve
from fakescan.storage import LocalStore
from tests import provenance_support as files
from tests.unit.test_pipeline import create_scan, make_runtime, results
from worker.pipeline import process_batch


def big_jpeg(exif: Image.Exif | None = None) -> bytes:
    """A JPEG far larger than the head the provenance detector reads first."""
    noise = np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    return files.jpeg(exif=exif, quality=95, image=Image.fromarray(noise, "RGB"))


@pytest.fixture
def reads(monkeypatch) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {"whole": [], "head": []}
    whole, head = LocalStore.read, LocalStore.read_head

    def read(self, key, max_bytes):  # type: ignore[no-untyped-def]
        seen["whole"].append(key)
        return whole(self, key, max_bytes)

    def read_head(self, key, length, max_bytes):  # type: ignore[no-untyped-def]
        seen["head"].append(key)
        return head(self, key, length, max_bytes)

    monkeypatch.setattr(LocalStore, "read", read)
    monkeypatch.setattr(LocalStore, "read_head", read_head)
    return seen


def provenance_scan(tmp_path: Path, objects: dict[str, bytes]):  # type: ignore[no-untyped-def]
    root = tmp_path / "archive"
    root.mkdir()
    for key, data in objects.items():
        (root / key).write_bytes(data)
    runtime = make_runtime()
    scan_id, ids = create_scan(runtime, root, [resolve("provenance", runtime.settings)], sorted(objects))
    process_batch(runtime.settings, runtime.sessions, scan_id, list(ids.values()), runtime.cache)
    return {key: row for (key, _), row in results(runtime).items()}


def test_jpeg_metadata_comes_from_the_head_and_c2pa_reads_the_whole_object(tmp_path, reads):
    signer = files.TestSigner.create()
    plain, camera = big_jpeg(), big_jpeg(files.camera_exif())
    signed = signer.sign(big_jpeg(), "image/jpeg", "trainedAlgorithmicMedia", generator="Adobe Firefly 3.1")
    png = files.png_with_text({"parameters": files.A1111_PARAMETERS})
    assert min(map(len, (plain, camera, signed))) > 2 * 256 * 1024
    rows = provenance_scan(tmp_path, {"plain.jpg": plain, "camera.jpg": camera, "signed.jpg": signed,
                                      "gen.png": png, "empty.jpg": b""})
    assert sorted(reads["head"]) == ["camera.jpg", "empty.jpg", "gen.png", "plain.jpg", "signed.jpg"]
    # not the JPEGs whose head holds all their metadata, nor the small PNG the head read whole
    assert reads["whole"] == ["signed.jpg"]
    assert rows["plain.jpg"].evidence["summary"] == "no provenance metadata"
    assert rows["camera.jpg"].score is not None and rows["camera.jpg"].verdict == "real"
    assert rows["signed.jpg"].evidence["c2pa"]["hash_binding_valid"] and rows["signed.jpg"].verdict == "fake"
    assert rows["gen.png"].verdict == "fake"
    assert rows["empty.jpg"].status == "error"


def test_judged_from_the_head_exactly_as_from_the_whole_object(tmp_path):
    from worker.detectors import load_detector
    from worker.detectors.base import Sample

    runtime = make_runtime()
    detector = load_detector(resolve("provenance", runtime.settings), runtime.settings)
    data = big_jpeg(files.camera_exif())
    head = Sample("mem://x", data[:256 * 1024], rest=lambda: data)
    assert detector.predict_samples([head]) == detector.predict_samples([Sample("mem://x", data)])
    assert not head.complete  # the rest was never read
