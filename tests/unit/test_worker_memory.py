"""worker/memory.py: the heap trim and Triton kept out of CPU workers."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import pytest

from worker.memory import release_free_memory, skip_triton_on_cpu


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
