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
    module = kept_out_of_file(module.to("cpu"))
    with warnings.catch_warnings():  # torch.ao's deprecation notice (torchao replaces it) on every load
        warnings.simplefilter("ignore", (DeprecationWarning, UserWarning))
        # in place: a copy would hold a second fp32 model while quantising (the load peak)
        return cast(M, torch.ao.quantization.quantize_dynamic(module, {nn.Linear}, dtype=torch.qint8, inplace=True))


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
