"""What a worker process does to keep its resident memory near what it uses.

Measured with ``/proc/self/smaps`` (``tests/benchmarks/bench_scan.py`` splits each scan's peak RSS
by mapping; report: docs/results/2026-12-01-worker-memory-prefetch.md):

- **free heap handed back after each batch**: glibc keeps what a batch freed (activations,
  fetched bytes) in its heaps for reuse; ``malloc_trim`` returns the free pages to the kernel, so
  a worker waiting for its next batch holds what it uses, not its last batch's high-water mark
  (after one SigLIP-base forward of 16 images: 535 MB anonymous, 437 MB trimmed). It does not
  lower the peak inside a batch;
- **no Triton on a CPU worker**: transformers' image processors import torchvision, which imports
  ``torch._dynamo``, which loads Triton's compiler library (72 MB resident) whenever the package
  is installed. A CPU worker never compiles a kernel, so it marks Triton absent before the first
  detector loads (``FAKESCAN_DEVICE=cpu`` only; CUDA workers keep it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from functools import cache

log = logging.getLogger(__name__)


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None  # glibc only (not musl)


def release_free_memory() -> bool:
    """Give the heap's free pages back to the kernel (glibc ``malloc_trim``); False where unavailable."""
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.malloc_trim(0))


def skip_triton_on_cpu(device: str) -> bool:
    """On a CPU worker, make ``import triton`` fail as if it were not installed; True when it did so.

    Only before anything imported it (a process that already has it keeps it)."""
    if not device.startswith("cpu") or "triton" in sys.modules:
        return False
    sys.modules["triton"] = None  # type: ignore[assignment]  # the import system's "not available" marker
    return True
