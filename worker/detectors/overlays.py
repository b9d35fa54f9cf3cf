"""Heat maps drawn over the image they explain (Grad-CAM, attention)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

MIN_SIDE = 256  # tiny inputs (CIFAKE is 32x32) are upscaled so the overlay is readable


def heatmap_overlay(image: Image.Image, heat: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """The image with ``heat`` (h, w, values in [0, 1]) as a jet colour map blended on top."""
    from matplotlib import colormaps

    base = image.convert("RGB")
    scale = max(1.0, MIN_SIDE / min(base.size))
    if scale > 1:
        base = base.resize((round(base.width * scale), round(base.height * scale)), Image.Resampling.BICUBIC)
    heat_image = Image.fromarray(np.uint8(np.clip(heat, 0, 1) * 255)).resize(base.size, Image.Resampling.BILINEAR)
    coloured = colormaps["jet"](np.asarray(heat_image) / 255.0)[..., :3]
    blended = (1 - alpha) * np.asarray(base, dtype=np.float32) / 255.0 + alpha * coloured
    return Image.fromarray(np.uint8(np.clip(blended, 0, 1) * 255))


def scale_maps(maps: torch.Tensor) -> torch.Tensor:
    """(N, h, w) → each map rescaled to [0, 1]."""
    flat = maps.flatten(1)
    low, high = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    return ((flat - low) / (high - low).clamp_min(1e-8)).view_as(maps)


def grad_cam(module: nn.Module, layer: nn.Module, batch: torch.Tensor) -> dict[str, torch.Tensor]:
    """Grad-CAM maps of ``layer`` for the "real" and "fake" targets, each (N, h, w) in [0, 1]."""
    captured: dict[str, torch.Tensor] = {}

    def keep(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        output.retain_grad()
        captured["activation"] = output

    handle = layer.register_forward_hook(keep)
    was_training = module.training
    module.eval()
    try:
        maps = {}
        for name in ("real", "fake"):
            module.zero_grad(set_to_none=True)
            with torch.enable_grad():
                logits = module(batch.detach().clone().requires_grad_(True))
                target = _target_logit(logits, name)
                target.sum().backward()
            activation = captured["activation"]
            if activation.grad is None:
                raise RuntimeError(f"{type(layer).__name__} got no gradient: it does not lead to the logits")
            weights = activation.grad.mean(dim=(2, 3), keepdim=True)
            maps[name] = scale_maps(F.relu((weights * activation).sum(dim=1)).detach())
        return maps
    finally:
        handle.remove()
        module.zero_grad(set_to_none=True)
        module.train(was_training)


def _target_logit(logits: torch.Tensor, name: str) -> torch.Tensor:
    if logits.shape[-1] == 1:  # sigmoid head: evidence for "real" is evidence against "fake"
        return logits[:, 0] if name == "fake" else -logits[:, 0]
    return logits[:, 1 if name == "fake" else 0]
