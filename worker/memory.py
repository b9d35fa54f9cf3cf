"""What a worker process does to keep its resident memory near what it uses.

Measured with ``/proc/self/smaps`` (``tests/benchmarks/bench_scan.py`` splits each scan's peak RSS
by mapping; report: docs/results/2026-12-01-worker-memory-prefetch.md):

- **free heap handed back after each chunk and each batch**: glibc keeps what a chunk freed
  (activations, fetched bytes) in its heaps for reuse; ``malloc_trim`` returns the free pages to
  the kernel. A CPU worker trims after every chunk it scores (``worker.pipeline``), so the heap's
  high-water mark is about one chunk's activations rather than what fragmentation piles up over a
  batch, and every worker trims after each batch, so an idle one holds what it uses (after one
  SigLIP-base forward of 16 images: 535 MB anonymous, 437 MB trimmed). CUDA workers keep their
  activations on the device and trim per batch only;
- **large blocks mapped on their own (opt-in)**: glibc serves a block of at least
  ``M_MMAP_THRESHOLD`` with its own mapping, unmapped when freed; smaller ones come from the heap.
  By default the threshold starts at 128 KiB and rises to the largest block freed so far (up to
  32 MiB), so after a first forward a model's activations (MBs each) are heap blocks. A fixed
  threshold (``FAKESCAN_MALLOC_MMAP_THRESHOLD``, set with ``mallopt`` when the worker starts; glibc
  only, see :func:`apply_heap_settings`) keeps them out of the heap, but every forward then faults
  its activations' pages in afresh: measured idle, 1 MiB lowered a SigLIP-base scan's peak by
  about 40 MB more than the per-chunk trim and cost 15-25% of its speed, so it is off (0) by default;
- **no optional packages a scan does not use**: transformers imports torchvision (for its
  torchvision image processors) and scipy (object-detection losses) whenever they are installed;
  a worker loads checkpoints with their PIL image processors and never computes a loss, so
  ``worker.detectors.hf_classifier`` imports transformers with both hidden
  (:func:`hidden_from_imports`); they import again afterwards, for a family that needs them;
- **a checkpoint's mapped pages dropped once its weights are cast** (:func:`drop_file_pages`):
  transformers loads safetensors weights in place, as a private file mapping; casting them to
  bf16 reads every page of it, which then stays resident beside the bf16 copy until the mapping
  goes (SigLIP-base: a 1.25 GB load peak for a model that runs in 0.9 GB). Pages still the file's
  own are dropped once their tensor is cast; a later read would fault them in from the file again;
- **no Triton on a CPU worker**: transformers imports ``torch._dynamo`` (its fp8 kernels module;
  torchvision's ops did too), which loads Triton's compiler library (72 MB resident) whenever the package
  is installed. A CPU worker never compiles a kernel, so it marks Triton absent before the first
  detector loads (``FAKESCAN_DEVICE=cpu`` only; CUDA workers keep it).
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import ctypes.util
import logging
import mmap
import sys
from functools import cache
from typing import TYPE_CHECKING, Iterator, Sequence

if TYPE_CHECKING:
    from fakescan.settings import Settings

log = logging.getLogger(__name__)


def prepare_worker_process(settings: "Settings") -> None:
    """What a worker process sets before it imports torch (both runners call it): the heap's mmap
    threshold and, on a CPU worker, no Triton."""
    apply_heap_settings(settings.malloc_mmap_threshold)
    skip_triton_on_cpu(settings.resolved_device())


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None  # glibc only (not musl)


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
MADV_DONTNEED = 4  # Linux madvise advice (sys/mman.h)


def apply_heap_settings(mmap_threshold: int) -> bool:
    """Fix glibc's mmap threshold at ``mmap_threshold`` bytes (0: leave glibc's dynamic default);
    True when it was set. Fixing it also stops glibc raising the trim threshold with it, so a free
    heap top over 128 KiB goes back to the kernel as before. Without glibc (musl, macOS) nothing
    happens."""
    libc = _libc()
    if libc is None or mmap_threshold <= 0 or not hasattr(libc, "mallopt"):
        return False
    if not libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold):
        log.warning("mallopt refused an mmap threshold of %d bytes: the heap keeps glibc's defaults", mmap_threshold)
        return False
    return True


def release_free_memory() -> bool:
    """Give the heap's free pages back to the kernel (glibc ``malloc_trim``); False where unavailable."""
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.malloc_trim(0))


def file_mappings() -> list[tuple[int, int]]:
    """Address ranges this process maps from files (``/proc/self/maps``; none where there is none)."""
    try:
        with open("/proc/self/maps") as maps:
            lines = maps.read().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:  # "start-end perms offset dev inode path"
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[4] != "0" and fields[5].startswith("/"):
            start, end = fields[0].split("-")
            found.append((int(start, 16), int(end, 16)))
    return found


def drop_file_pages(address: int, length: int, mappings: Sequence[tuple[int, int]]) -> int:
    """Drop the resident pages inside ``[address, address + length)`` that are still the file's own
    (``/proc/self/pagemap``: present, file-backed; a private page once written is anonymous and
    kept), when the range lies in one of ``mappings``. Reading such an address again faults the
    page in from the file, so nothing changes but the resident size. Returns the bytes dropped
    (0 without glibc or ``/proc``)."""
    page = mmap.PAGESIZE
    first, last = -(-address // page) * page, (address + length) // page * page
    libc = _libc()
    if libc is None or last <= first or not any(start <= address and address + length <= end
                                                for start, end in mappings):
        return 0
    try:
        with open("/proc/self/pagemap", "rb") as pagemap:
            pagemap.seek(first // page * 8)
            entries = array.array("Q", pagemap.read((last - first) // page * 8))
    except OSError:
        return 0
    dropped, run_start = 0, None
    for index, entry in enumerate([*entries, 0]):  # bit 63: present; bit 61: file page or shared
        if entry >> 63 & 1 and entry >> 61 & 1:
            run_start = index if run_start is None else run_start
        elif run_start is not None:
            at, size = first + run_start * page, (index - run_start) * page
            if libc.madvise(ctypes.c_void_p(at), ctypes.c_size_t(size), MADV_DONTNEED) == 0:
                dropped += size
            run_start = None
    return dropped


def skip_triton_on_cpu(device: str) -> bool:
    """On a CPU worker, make ``import triton`` fail as if it were not installed; True when it did so.

    Only before anything imported it (a process that already has it keeps it)."""
    if not device.startswith("cpu") or "triton" in sys.modules:
        return False
    sys.modules["triton"] = None  # type: ignore[assignment]  # the import system's "not available" marker
    return True


@contextlib.contextmanager
def hidden_from_imports(names: Sequence[str]) -> Iterator[list[str]]:
    """Inside, each of ``names`` not imported yet looks not installed: ``import`` raises ImportError
    and ``importlib.util.find_spec`` answers None. Afterwards they import again (what was imported
    inside keeps its choice). Yields the names it hid."""
    hidden = [name for name in names if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # the import system's "not available" marker
    try:
        yield hidden
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
