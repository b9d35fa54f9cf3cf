"""The overlapped batch: one scaled decode per object for every detector, a pixel budget per process."""

from __future__ import annotations

import io
import threading
import time
import weakref
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tests.worker_families  # noqa: F401  (registers the test families)
import worker.fetch
from tests.unit.test_pipeline import create_scan, make_runtime, results
from tests.worker_families import SizedDetector
from tests.worker_support import detector_folder
from worker import stream
from worker.detectors import FULL_RESOLUTION, NO_PIXELS, InputNeed, Prediction
from worker.fetch import FetchWindow
from worker.pipeline import process_batch
from worker.stream import PixelBudget


def photo(width: int, height: int, seed: int = 0, fmt: str = "JPEG") -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, fmt)
    return buffer.getvalue()


def test_small_networks_are_decoded_with_headroom():
    assert stream.decode_side(InputNeed("size", 32)) == 128
    assert stream.decode_side(InputNeed("size", 224)) == 224
    assert stream.decode_side(FULL_RESOLUTION) is None


def test_the_largest_need_serves_every_detector_and_full_resolution_wins():
    assert InputNeed.largest([NO_PIXELS, InputNeed("size", 32), InputNeed("size", 224)]) == InputNeed("size", 224)
    assert InputNeed.largest([InputNeed("size", 32), FULL_RESOLUTION]) == FULL_RESOLUTION
    assert InputNeed.largest([NO_PIXELS]) == NO_PIXELS
    assert InputNeed.pixels((224, 160)) == InputNeed("size", 224)  # orientation may swap the sides


def test_the_budget_admits_one_oversized_image_alone_and_makes_others_wait():
    budget = PixelBudget(100)
    assert budget.acquire(500) == 500  # alone: granted although over the limit
    entered = threading.Event()

    def second() -> None:
        budget.acquire(10)
        entered.set()

    thread = threading.Thread(target=second)
    thread.start()
    time.sleep(0.1)
    assert not entered.is_set() and budget.waiting == 1
    budget.release(500)
    thread.join(timeout=5)
    assert entered.is_set() and budget.in_flight == 10 and budget.peak == 500


def scan_folder(tmp_path: Path, files: dict[str, bytes]) -> Path:
    root = tmp_path / "archive"
    root.mkdir()
    for key, data in files.items():
        (root / key).write_bytes(data)
    return root


def test_one_scaled_decode_serves_every_detector_of_the_scan(tmp_path, monkeypatch):
    root = scan_folder(tmp_path, {"a.jpg": photo(2000, 1500), "b.png": photo(2000, 1500, fmt="PNG")})
    decodes = []
    real_finish = stream.finish_decode
    monkeypatch.setattr(stream, "finish_decode", lambda image: decodes.append(image.size) or real_finish(image))
    runtime = make_runtime()
    small = detector_folder(tmp_path / "d", "small", family="test-sized", side=32)
    large = detector_folder(tmp_path / "d", "large", family="test-sized", side=64)
    scan_id, ids = create_scan(runtime, root, [small, large], ["a.jpg", "b.png"])
    process_batch(runtime.settings, runtime.sessions, scan_id, list(ids.values()), runtime.cache)
    rows = results(runtime)
    assert len(decodes) == 2  # one decode per object, not per detector
    # the largest need is 64 px, decoded with 4x headroom (a network under 128 px, see decode_side):
    # JPEG: DCT scaling to 1/4 (500x375), the smallest scale with both sides >= 256
    assert rows[("a.jpg", "small")].evidence == rows[("a.jpg", "large")].evidence == {"decoded": [500, 375]}
    # PNG: decoded whole, then box-reduced by 5 (1500 // 256) before any conversion
    assert rows[("b.png", "small")].evidence == {"decoded": [400, 300]}


def test_a_detector_opts_out_of_scaled_decoding(tmp_path):
    root = scan_folder(tmp_path, {"a.jpg": photo(2000, 1500)})
    runtime = make_runtime()
    small = detector_folder(tmp_path / "d", "small", family="test-sized", side=32)
    native = detector_folder(tmp_path / "d", "native", family="test-sized", side=32, full_resolution=True)
    scan_id, ids = create_scan(runtime, root, [small, native], ["a.jpg"])
    process_batch(runtime.settings, runtime.sessions, scan_id, list(ids.values()), runtime.cache)
    assert results(runtime)[("a.jpg", "small")].evidence == {"decoded": [2000, 1500]}


def test_images_kept_for_a_full_resolution_detector_never_deadlock_the_budget(tmp_path):
    files = {f"{index}.png": photo(64 + index, 48, seed=index, fmt="PNG") for index in range(6)}
    root = scan_folder(tmp_path, files)
    runtime = make_runtime(pixel_budget=1, inference_chunk=4, decode_threads=2)  # every image is over budget
    bright = detector_folder(tmp_path / "d", "bright")  # full resolution: its input is the decoded image
    scan_id, ids = create_scan(runtime, root, [bright], sorted(files))
    finished = threading.Event()

    def run() -> None:
        process_batch(runtime.settings, runtime.sessions, scan_id, list(ids.values()), runtime.cache)
        finished.set()

    threading.Thread(target=run, daemon=True).start()
    assert finished.wait(timeout=60), "the batch waited for ever on its own pixels"
    budget = runtime.cache.pixel_budget()
    assert budget.in_flight == 0 and budget.peak == max(w * 48 for w in range(64, 70))  # one image at a time
    assert all(row.status == "ok" for row in results(runtime).values())


def test_budget_held_by_a_failed_batch_is_given_back(tmp_path, monkeypatch):
    root = scan_folder(tmp_path, {f"{index}.png": photo(40, 40, seed=index, fmt="PNG") for index in range(5)})
    runtime = make_runtime(inference_chunk=2)
    bright = detector_folder(tmp_path / "d", "bright", always_raise=True)
    scan_id, ids = create_scan(runtime, root, [bright], sorted(p.name for p in root.iterdir()))
    with pytest.raises(Exception, match="broken"):
        process_batch(runtime.settings, runtime.sessions, scan_id, list(ids.values()), runtime.cache)
    assert runtime.cache.pixel_budget().in_flight == 0


def test_intra_op_threads_follow_the_setting_or_the_size_of_the_network():
    import torch

    from fakescan.settings import available_cpus, load_settings
    from worker.cache import set_inference_threads

    before = torch.get_num_threads()
    try:
        assert set_inference_threads(load_settings(), InputNeed("size", 32)) == 1 == torch.get_num_threads()
        assert set_inference_threads(load_settings(), InputNeed("size", 224)) == available_cpus()
        assert set_inference_threads(load_settings(), FULL_RESOLUTION) == available_cpus()
        assert set_inference_threads(load_settings(inference_threads=3), InputNeed("size", 32)) == 3
    finally:
        torch.set_num_threads(before)


def test_model_calls_take_8_images_on_a_cpu_unless_set(tmp_path, monkeypatch):
    from fakescan.settings import load_settings

    assert load_settings().resolved_inference_chunk("cpu") == 8
    assert load_settings().resolved_inference_chunk("cuda:0") == 16
    assert load_settings(inference_chunk=3).resolved_inference_chunk("cuda") == 3

    import worker.pipeline

    chunk_sizes: list[int] = []
    chunked = worker.pipeline.decoded_chunks

    def recording(*args, **kwargs):
        for chunk in chunked(*args, **kwargs):
            chunk_sizes.append(len(chunk))
            yield chunk

    monkeypatch.setattr(worker.pipeline, "decoded_chunks", recording)
    files = {f"{index:02}.png": photo(40, 40, seed=index, fmt="PNG") for index in range(20)}
    for setting, expected in ((None, [8, 8, 4]), (16, [16, 4])):
        (tmp_path / f"s{setting}").mkdir()
        root = scan_folder(tmp_path / f"s{setting}", files)
        chunk_sizes.clear()
        runtime = make_runtime(inference_chunk=setting, device="cpu")
        bright = detector_folder(tmp_path / f"d{setting}", "bright")
        scan_id, ids = create_scan(runtime, root, [bright], sorted(p.name for p in root.iterdir()))
        process_batch(runtime.settings, runtime.sessions, scan_id, list(ids.values()), runtime.cache)
        assert chunk_sizes == expected
        stored = results(runtime)
        assert len(stored) == 20 and all(row.status == "ok" for row in stored.values())


def test_a_cpu_worker_hands_the_heap_back_after_every_chunk(tmp_path, monkeypatch):
    import worker.pipeline

    events: list[str] = []
    chunked = worker.pipeline.decoded_chunks

    def recording(*args, **kwargs):
        for chunk in chunked(*args, **kwargs):
            events.append(f"chunk {len(chunk)}")
            yield chunk

    monkeypatch.setattr(worker.pipeline, "decoded_chunks", recording)
    monkeypatch.setattr(worker.pipeline, "release_free_memory", lambda: events.append("trim") or True)
    root = scan_folder(tmp_path, {f"{index:02}.png": photo(40, 40, seed=index, fmt="PNG") for index in range(10)})
    runtime = make_runtime(inference_chunk=4, device="cpu")
    bright = detector_folder(tmp_path / "d", "bright")
    scan_id, ids = create_scan(runtime, root, [bright], sorted(p.name for p in root.iterdir()))
    process_batch(runtime.settings, runtime.sessions, scan_id, list(ids.values()), runtime.cache)
    # each chunk's activations go back to the kernel before the next chunk's forward allocates its own
    assert events == ["chunk 4", "trim", "chunk 4", "trim", "chunk 2", "trim"]
    assert len(results(runtime)) == 10


def test_a_batch_holds_the_bytes_of_a_bounded_window_of_objects_not_all_of_them(tmp_path, monkeypatch):
    """Fetched bytes live from the fetch until the object is decoded: at most the fetches started
    ahead (FAKESCAN_FETCH_CONCURRENCY) plus the decode window (2 x chunk), whatever the batch size."""
    count, ahead, chunk = 24, 2, 2
    root = scan_folder(tmp_path, {f"{number}.jpg": photo(64, 48, seed=number) for number in range(count)})
    alive: set[int] = set()
    fetched_at_each_call: list[int] = []
    real_fetch = worker.fetch.fetch_one

    def tracked_fetch(*args, **kwargs):
        fetched = real_fetch(*args, **kwargs)
        weakref.finalize(fetched, alive.discard, id(fetched))  # this object is the one holding the bytes
        alive.add(id(fetched))
        return fetched

    def counting_predict(detector, inputs):
        fetched_at_each_call.append(len(alive))
        return [Prediction(0.5) for _ in inputs]

    monkeypatch.setattr(worker.fetch, "fetch_one", tracked_fetch)
    monkeypatch.setattr(SizedDetector, "predict_inputs", counting_predict)
    runtime = make_runtime(fetch_concurrency=ahead, inference_chunk=chunk)
    sized = detector_folder(tmp_path / "d", "sized", family="test-sized", side=32)
    keys = [f"{number}.jpg" for number in range(count)]
    scan_id, ids = create_scan(runtime, root, [sized], keys)
    report = process_batch(runtime.settings, runtime.sessions, scan_id, list(ids.values()), runtime.cache)
    assert report.ok == count and len(fetched_at_each_call) >= count // chunk
    # + one per decode thread: a job's bytes go when its thread drops the job, just after handing its result over
    assert max(fetched_at_each_call) <= ahead + 2 * chunk + runtime.settings.resolved_decode_threads() < count
    assert not alive  # nothing of the batch's bytes outlives it


def test_the_fetch_window_starts_fetches_only_so_far_ahead_of_the_ones_taken():
    started: list[int] = []

    def starter(number: int):
        def start() -> Future[int]:
            started.append(number)
            future: Future[int] = Future()
            future.set_result(number)
            return future
        return start

    running: Future[int] = Future()  # a fetch read ahead is already running: it is handed over as it is
    running.set_result(-1)
    window = FetchWindow([running, *(starter(number) for number in range(1, 6))], ahead=2)
    assert started == [1] and len(window) == 6
    assert window.take().result() == -1 and started == [1, 2]
    assert window.take().result() == 1 and started == [1, 2, 3]
    assert [future.result() for future in window.take_all()] == [2, 3, 4, 5] and started == [1, 2, 3, 4, 5]
    with pytest.raises(IndexError):
        window.take()
