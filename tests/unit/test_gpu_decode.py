"""Device JPEG decoding: which files go to the device, the batch fallback and the CPU path, run on CPU.

The code is the one a CUDA worker runs; here ``device="cpu"`` (torchvision decodes there too)."""

from __future__ import annotations

import io
from functools import partial

import numpy as np
import pytest
import torch
from PIL import Image

from fakescan.decode import DecodeError, decode_image
from fakescan.settings import load_settings
from tests.worker_support import bomb_png
from worker.detectors.compact_cnn import CompactCNNDetector
from worker.fetch import FetchedObject
from worker.gpu_decode import decode_batch, device_decodable, device_decoded_chunks, uses_device_decode
from worker.pipeline import BatchObject

LIMIT = 64_000_000


def jpeg(width: int = 64, height: int = 48, mode: str = "RGB", seed: int = 0, **save: object) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").convert(mode).save(buffer, "JPEG", quality=90, **save)
    return buffer.getvalue()


def rotated(data: bytes) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).save(buffer, "JPEG", exif=exif.tobytes())
    return buffer.getvalue()


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(("data", "expected"), [
    (jpeg(), True), (jpeg(mode="L"), True),
    (jpeg(progressive=True), False),  # progressive: the CPU
    (jpeg(mode="CMYK"), False),  # needs its colour profile
    (rotated(jpeg()), False),  # EXIF orientation: turned on the CPU
    (png(), False), (b"", False), (jpeg()[:20], False),
])
def test_only_jpegs_the_device_decodes_exactly_are_sent_there(data, expected):
    assert device_decodable(data, LIMIT) is expected


def test_the_pixel_limit_is_checked_from_the_header():
    assert not device_decodable(jpeg(64, 48), 64 * 48 - 1)


def test_a_batch_mixes_device_and_cpu_decodes_and_a_bad_file_becomes_its_reason():
    good, grey = jpeg(seed=1), jpeg(mode="L", seed=2)
    truncated = good[: len(good) // 2]  # the header passes: the device batch fails, then the CPU says why
    results = decode_batch([good, png(), truncated, grey, bomb_png(), rotated(good)], "cpu", LIMIT)
    assert isinstance(results[0], torch.Tensor) and results[0].shape == (3, 48, 64)
    assert isinstance(results[1], Image.Image)
    assert isinstance(results[2], DecodeError) and results[2].kind == "corrupt"
    assert isinstance(results[3], torch.Tensor) and results[3].shape == (3, 48, 64)  # grey as RGB
    assert isinstance(results[4], DecodeError) and results[4].kind == "decompression-bomb"
    assert isinstance(results[5], Image.Image) and results[5].size == (48, 64)  # upright
    cpu = np.asarray(decode_image(good, LIMIT), dtype=np.int16)
    assert np.abs(results[0].permute(1, 2, 0).numpy().astype(np.int16) - cpu).max() <= 2  # same pixels


def test_device_decoding_is_chosen_only_on_cuda_when_every_detector_takes_tensors():
    cnn = CompactCNNDetector.__new__(CompactCNNDetector)
    assert uses_device_decode(True, "cuda:0", [cnn])
    assert not uses_device_decode(False, "cuda:0", [cnn])
    assert not uses_device_decode(True, "cpu", [cnn])
    assert not uses_device_decode(True, "cuda", [cnn, object()])  # a detector that wants PIL images
    assert not uses_device_decode(True, "cuda", [])


def test_device_prepared_inputs_score_like_host_prepared_ones(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    settings = load_settings()
    cnn = CompactCNNDetector.load(_bundled(), settings, _manifest())
    blobs = [jpeg(300, 200, seed=seed) for seed in range(3)] + [png()]
    objects = [BatchObject(i, f"mem://{i}", "mem://", str(i), "x") for i in range(len(blobs))]
    fetches = [partial(FetchedObject, obj, blob, None, 0.0) for obj, blob in zip(objects, blobs, strict=True)]
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(fetch) for fetch in fetches]
        (chunk,) = list(device_decoded_chunks(futures, [cnn], "cpu", LIMIT, chunk=8, keep_bytes=False))
    assert [item.fetched.object.id for item in chunk] == [0, 1, 2, 3] and chunk[0].fetched.data is None
    assert isinstance(chunk[0].inputs[0], torch.Tensor) and isinstance(chunk[3].inputs[0], np.ndarray)
    device_scores = [p.score for p in cnn.predict_inputs([item.inputs[0] for item in chunk])]
    host_scores = [p.score for p in cnn.predict([decode_image(blob, LIMIT) for blob in blobs])]
    assert np.allclose(device_scores, host_scores, atol=0.05)


def _bundled():
    from fakescan.catalog import local_folder, resolve

    settings = load_settings()
    return local_folder(resolve("cifake", settings), settings)


def _manifest():
    import json

    return json.loads((_bundled() / "fakescan.json").read_text())
