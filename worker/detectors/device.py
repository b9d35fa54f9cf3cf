"""Where a detector's model runs and at which precision: the choices every torch family shares.

- ``fp32`` everywhere; ``bf16`` / ``fp16`` as CUDA autocast (CPU half precision is slow and lossy,
  so on a CPU they run fp32);
- ``int8``: dynamic quantisation of the ``nn.Linear`` layers (weights int8, activations quantised
  on the fly), a CPU-only opt-in whose score change is measured in ``tests/benchmarks/bench_scan.py``;
- inputs go to the device from pinned host memory with ``non_blocking`` copies on CUDA, so the
  copy of one chunk overlaps the decode of the next.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, ContextManager, TypeVar, cast

import torch
from torch import nn

from fakescan.errors import DetectorError

M = TypeVar("M", bound=nn.Module)
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: str, precision: str) -> ContextManager[Any]:
    """bf16/fp16 autocast on CUDA; CPU always runs fp32 (int8 is applied to the module at load)."""
    if not device.startswith("cuda") or precision not in AUTOCAST_DTYPES:
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=AUTOCAST_DTYPES[precision])


def place(module: M, device: str, precision: str) -> M:
    """The module in eval mode on ``device``; int8-quantised (CPU only) when ``precision`` says so."""
    module = module.eval()
    if precision != "int8":
        return module.to(device)
    if not device.startswith("cpu"):
        raise DetectorError(f"precision int8 is a CPU precision (dynamic quantisation); device {device} "
                            "runs fp32, bf16 or fp16: set FAKESCAN_PRECISION accordingly")
    with warnings.catch_warnings():  # torch.ao's deprecation notice (torchao replaces it) on every load
        warnings.simplefilter("ignore", (DeprecationWarning, UserWarning))
        return cast(M, torch.ao.quantization.quantize_dynamic(module.to("cpu"), {nn.Linear}, dtype=torch.qint8))


def to_device(batch: torch.Tensor, device: str) -> torch.Tensor:
    """A host batch on ``device``: pinned and copied without blocking on CUDA, unchanged on CPU."""
    if not device.startswith("cuda"):
        return batch
    return batch.pin_memory().to(device, non_blocking=True)
