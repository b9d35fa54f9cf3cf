"""worker/memory.py: the heap trim and Triton kept out of CPU workers."""

from __future__ import annotations

import copy
import ctypes
import ctypes.util
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

import worker.memory
from fakescan.settings import load_settings
from worker.memory import apply_heap_settings, release_free_memory, skip_triton_on_cpu


def anonymous_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("RssAnon:")) / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim, /proc/self/status")
def test_the_heap_trim_gives_freed_memory_back_to_the_kernel():
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    blocks = [libc.malloc(2000) for _ in range(30_000)]  # 60 MB of small heap blocks, as a batch leaves
    pin = libc.malloc(2000)  # above them: the heap's top cannot shrink by itself
    for block in [*blocks, pin]:
        libc.memset(block, 1, 2000)
    for block in blocks:
        libc.free(block)
    before = anonymous_mb()
    try:
        assert release_free_memory()
        assert anonymous_mb() < before - 40
    finally:
        libc.free(pin)


def test_a_cpu_worker_imports_no_triton_and_a_cuda_worker_keeps_it(monkeypatch):
    if "triton" in sys.modules and sys.modules["triton"] is not None:
        pytest.skip("triton was imported earlier in this process: it stays")
    monkeypatch.delitem(sys.modules, "triton", raising=False)
    assert not skip_triton_on_cuda_device()
    assert "triton" not in sys.modules
    try:
        assert skip_triton_on_cpu("cpu")
        with pytest.raises(ImportError):
            import triton  # noqa: F401
        assert not skip_triton_on_cpu("cpu")  # already decided: nothing to do
    finally:
        if "triton" in sys.modules and sys.modules["triton"] is None:
            del sys.modules["triton"]


def skip_triton_on_cuda_device() -> bool:
    return skip_triton_on_cpu("cuda:0")


# Run in a child: mallopt changes the whole process's allocator. A block of 8 MB is freed first, which
# raises glibc's dynamic threshold above 2 MB; then a 2 MB block is either a mapping of its own (fixed
# threshold) or a block of the main thread's heap, [heap] in /proc/self/maps (dynamic default).
OWN_MAPPING_PROBE = r"""
import ctypes, ctypes.util, sys
from worker.memory import apply_heap_settings
applied = apply_heap_settings(int(sys.argv[1]))
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.free(libc.malloc(8 << 20))
block = libc.malloc(2 << 20)
in_heap = False
for line in open("/proc/self/maps"):
    start, end = (int(part, 16) for part in line.split()[0].split("-"))
    in_heap = in_heap or (start <= block < end and line.rstrip().endswith("[heap]"))
print(applied, not in_heap)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt, /proc/self/maps")
@pytest.mark.parametrize("threshold, expected", [(1 << 20, "True True"), (0, "False False")])
def test_a_fixed_mmap_threshold_gives_large_blocks_their_own_mapping(threshold, expected):
    if _glibc() is None:
        pytest.skip("not glibc")
    result = subprocess.run([sys.executable, "-c", OWN_MAPPING_PROBE, str(threshold)], capture_output=True, text=True,
                            check=True, cwd=Path(__file__).resolve().parents[2])
    assert result.stdout.split() == expected.split()


def test_the_heap_settings_are_skipped_without_glibc(monkeypatch):
    monkeypatch.setattr(worker.memory, "_libc", lambda: None)
    assert not apply_heap_settings(1 << 20)
    assert not release_free_memory()


def test_the_heap_settings_are_skipped_when_libc_has_no_mallopt(monkeypatch):
    monkeypatch.setattr(worker.memory, "_libc", lambda: SimpleNamespace(malloc_trim=lambda pad: 1))
    assert not apply_heap_settings(1 << 20)


def test_a_refused_threshold_is_logged_and_reported(monkeypatch, caplog):
    calls = []
    libc = SimpleNamespace(malloc_trim=lambda pad: 1, mallopt=lambda parameter, value: calls.append(value) or 0)
    monkeypatch.setattr(worker.memory, "_libc", lambda: libc)
    assert not apply_heap_settings(3 << 20)
    assert calls == [3 << 20] and "refused" in caplog.text


def test_a_worker_process_applies_the_threshold_from_its_settings(monkeypatch):
    applied = []
    monkeypatch.setattr(worker.memory, "apply_heap_settings", applied.append)
    monkeypatch.setattr(worker.memory, "skip_triton_on_cpu", lambda device: False)
    worker.memory.prepare_worker_process(load_settings(malloc_mmap_threshold=4096))
    worker.memory.prepare_worker_process(load_settings())
    assert applied == [4096, 0]  # unset: glibc's dynamic threshold (a fixed one costs a CPU worker up to 20% speed)


def _glibc():
    return worker.memory._libc()


def test_hidden_modules_look_not_installed_inside_and_import_again_after():
    import importlib.util

    name = "json.tool"  # not imported by the test run, and harmless to import
    if name in sys.modules:
        pytest.skip(f"{name} was imported earlier in this process")
    with worker.memory.hidden_from_imports([name, "sys"]) as hidden:
        assert hidden == [name]  # sys is imported: left alone
        assert importlib.util.find_spec(name) is None
        with pytest.raises(ImportError):
            importlib.import_module(name)
    assert name not in sys.modules
    assert importlib.import_module(name).__name__ == name


def resident_kb_of(path: Path) -> int:
    """This process's resident KiB mapped from ``path`` (``/proc/self/smaps``)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:  # a mapping's header line
                inside = len(fields) == 6 and fields[5] == str(path)
            elif inside and fields[0] == "Rss:":
                total += int(fields[1])
    return total


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/pagemap, madvise")
def test_file_pages_are_dropped_once_read_and_written_pages_are_kept(tmp_path):
    import numpy as np

    from worker.memory import drop_file_pages, file_mappings

    path = tmp_path / "weights.bin"
    np.arange(4 * 1024 * 1024, dtype=np.float32).tofile(path)  # 16 MiB
    mapped = np.memmap(path, dtype=np.float32, mode="c")  # private, as a checkpoint loaded in place
    assert mapped.sum(dtype=np.float64) > 0 and resident_kb_of(path) >= 16 * 1024 - 8
    mapped[1000] = -1.0  # this page is now the process's own (copy on write)
    address, length = mapped.ctypes.data, mapped.nbytes

    dropped = drop_file_pages(address, length, file_mappings())

    # all but the written page (the kernel may also unmap its neighbours when it copies it)
    assert 12 * 1024 * 1024 <= dropped < 16 * 1024 * 1024
    assert resident_kb_of(path) <= 12
    assert mapped[1000] == -1.0 and mapped[999] == 999.0  # the written value stays, the rest reads the file
    assert np.array_equal(mapped[2000:], np.arange(2000, 4 * 1024 * 1024, dtype=np.float32))
    anonymous = np.arange(4 * 1024 * 1024, dtype=np.float32)
    assert drop_file_pages(anonymous.ctypes.data, anonymous.nbytes, file_mappings()) == 0
    assert anonymous[12345] == 12345.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/pagemap, madvise")
def test_casting_weights_leaves_no_page_of_the_mapped_original_resident(tmp_path):
    import numpy as np
    import torch
    from torch import nn

    from worker.detectors.device import cast_weights

    path = tmp_path / "model.bin"
    torch.manual_seed(0)
    expected = torch.randn(1024, 2048)
    expected.numpy().tofile(path)  # 8 MiB
    layer = nn.Linear(2048, 1024)
    with torch.no_grad():
        layer.weight.data = torch.from_numpy(np.memmap(path, dtype=np.float32, mode="c").reshape(1024, 2048))
    assert torch.equal(layer.weight, expected)

    cast_weights(layer, torch.bfloat16)

    assert layer.weight.dtype == layer.bias.dtype == torch.bfloat16
    assert torch.equal(layer.weight, expected.to(torch.bfloat16))
    assert resident_kb_of(path) <= 8  # the cast read all 8 MiB of it


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/pagemap, madvise")
def test_int8_drops_each_layers_mapped_pages_once_it_is_quantised(tmp_path):
    import numpy as np
    import torch
    from torch import nn

    from worker.detectors.device import place

    path = tmp_path / "model.bin"
    torch.manual_seed(0)
    torch.randn(2 * 1024 * 1024).numpy().tofile(path)  # 8 MiB: two 4 MiB layers
    mapped = np.memmap(path, dtype=np.float32, mode="c")  # kept open, as a loader keeps its mapping
    module = nn.Sequential(nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 1024))
    with torch.no_grad():
        for index, layer in enumerate((module[0], module[2])):
            layer.weight.data = torch.from_numpy(mapped[index * 1024 * 1024:(index + 1) * 1024 * 1024]).view(1024, 1024)
    inputs = torch.rand(4, 1024)
    with warnings.catch_warnings():  # torch.ao's deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        expected = torch.ao.quantization.quantize_dynamic(copy.deepcopy(module), {nn.Linear}, dtype=torch.qint8)(inputs)

    placed = place(module, "cpu", "int8")

    assert torch.equal(placed(inputs), expected)  # layer by layer quantises as the whole model at once
    assert resident_kb_of(path) <= 8  # quantising read all 8 MiB of it
