"""Where a detector's model runs and at which precision: the choices every torch family shares.

- ``fp32`` everywhere; ``bf16`` / ``fp16`` as CUDA autocast over fp32 weights;
- ``bf16`` on a CPU that computes it natively (AVX512-BF16 or AMX): weights cast to bf16 (half
  the memory, no per-forward cast) under CPU autocast, which keeps fp32 where it must. A CPU
  without it would emulate bf16, slower than fp32: it runs fp32 and says so once, as ``fp16``
  does on every CPU. Training (``worker/lab``) places its model at fp32 and autocasts itself;
- ``int8``: dynamic quantisation of the ``nn.Linear`` layers (weights int8, activations quantised
  on the fly), a CPU-only opt-in whose score change is measured in ``tests/benchmarks/bench_scan.py``;
- inputs go to the device from pinned host memory with ``non_blocking`` copies on CUDA, so the
  copy of one chunk overlaps the decode of the next.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from typing import Any, ContextManager, TypeVar

import torch
from torch import nn

from fakescan.errors import DetectorError

log = logging.getLogger(__name__)
M = TypeVar("M", bound=nn.Module)
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_runs_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic (AVX512-BF16 or AMX); elsewhere oneDNN emulates it.

    torch's own probe (what its kernels dispatch on), else the kernel's CPU flags."""
    try:
        capability = torch._C._cpu._get_cpu_capability()
    except AttributeError:  # a torch without the probe
        return bool(set(BF16_CPU_FLAGS) & cpu_flags())
    return any(capability.get(flag) for flag in BF16_CPU_FLAGS)


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """The first CPU's flags as the kernel lists them; none where there is no such file."""
    try:
        with open(cpuinfo) as lines:
            return next((set(line.split(":", 1)[1].split()) for line in lines if line.startswith("flags")), set())
    except OSError:
        return set()


def run_precision(device: str, precision: str) -> str:
    """The precision a model runs at on ``device`` when ``precision`` is asked for."""
    if device.startswith("cuda") or precision in ("fp32", "int8") or (precision == "bf16" and cpu_runs_bf16()):
        return precision
    _say_cpu_runs_fp32(precision)
    return "fp32"


@functools.cache
def _say_cpu_runs_fp32(precision: str) -> None:
    why = "this CPU has no bf16 arithmetic (AVX512-BF16 or AMX)" if precision == "bf16" else "fp16 is a CUDA precision"
    log.warning("precision %s: %s; the CPU runs fp32", precision, why)


def autocast(device: str, precision: str) -> ContextManager[Any]:
    """bf16/fp16 autocast on CUDA, bf16 autocast on a bf16 CPU; otherwise none (int8 is the module's)."""
    precision = run_precision(device, precision)
    if precision not in AUTOCAST_DTYPES:
        return contextlib.nullcontext()
    return torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=AUTOCAST_DTYPES[precision])


def place(module: M, device: str, precision: str) -> M:
    """The module in eval mode on ``device``: int8-quantised (CPU only) or with bf16 weights (a bf16
    CPU) when ``precision`` says so; on CUDA half precision is autocast over fp32 weights."""
    module = module.eval()
    if precision != "int8":
        on_bf16_cpu = not device.startswith("cuda") and run_precision(device, precision) == "bf16"
        return cast_weights(module.to(device), torch.bfloat16) if on_bf16_cpu else module.to(device)
    if not device.startswith("cpu"):
        raise DetectorError(f"precision int8 is a CPU precision (dynamic quantisation); device {device} "
                            "runs fp32, bf16 or fp16: set FAKESCAN_PRECISION accordingly")
    return quantised(kept_out_of_file(module.to("cpu")))


def quantised(module: M) -> M:
    """``module`` with its ``nn.Linear`` layers dynamically quantised to int8, in place and one layer
    at a time: a copy would hold a second fp32 model, and each layer's pages of a checkpoint's file
    mapping are dropped once it is quantised (see :func:`cast_weights`)."""
    from worker.memory import file_mappings

    mappings = file_mappings()
    with warnings.catch_warnings():  # torch.ao's deprecation notice (torchao replaces it) on every load
        warnings.simplefilter("ignore", (DeprecationWarning, UserWarning))
        for name, layer in [(name, layer) for name, layer in module.named_modules() if type(layer) is nn.Linear]:
            weight = layer.weight.data
            torch.ao.quantization.quantize_dynamic(module, {name}, dtype=torch.qint8, inplace=True)
            _drop_mapped_pages(weight, mappings)
    return module


def cast_weights(module: M, dtype: torch.dtype) -> M:
    """``module`` with its floating-point tensors cast to ``dtype``, one at a time.

    A checkpoint loaded in place is a file mapping: once a tensor is cast, its pages there are
    dropped (``worker.memory.drop_file_pages``), so loading holds the cast weights and
    one tensor of the original, not the whole mapped original beside them. The mapping itself
    goes once nothing points into it."""
    from worker.memory import file_mappings

    mappings = file_mappings()
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.is_floating_point() and tensor.dtype != dtype:
                original = tensor.data
                tensor.data = original.to(dtype)
                _drop_mapped_pages(original, mappings)
    return module


def _drop_mapped_pages(replaced: torch.Tensor, mappings: list[tuple[int, int]]) -> None:
    """Drop the pages of a file mapping that ``replaced`` (a tensor just converted) still has resident."""
    from worker.memory import drop_file_pages

    if replaced.is_contiguous():
        drop_file_pages(replaced.data_ptr(), replaced.numel() * replaced.element_size(), mappings)


def kept_out_of_file(module: M) -> M:
    """``module`` with every tensor that int8 quantisation keeps in fp32 copied into memory of its own.

    Those tensors (convolutions, norms, embeddings, the linear layers' biases: a few MB in a
    transformer) may point into the checkpoint's file mapping, and quantising reads every page
    of it: once nothing points there the mapping goes (-350 MB resident for SigLIP-base). The
    linear layers' fp32 weights are replaced by their int8 copies and are left where they are."""
    linear_weights = {id(layer.weight) for layer in module.modules() if type(layer) is nn.Linear}  # as quantised
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            if id(tensor) not in linear_weights:
                tensor.data = tensor.data.clone()
    return module


def to_device(batch: torch.Tensor, device: str) -> torch.Tensor:
    """A host batch on ``device``: pinned and copied without blocking on CUDA, unchanged on CPU."""
    if not device.startswith("cuda"):
        return batch
    return batch.pin_memory().to(device, non_blocking=True)
