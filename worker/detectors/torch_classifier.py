"""Shared machinery of the trainable PyTorch families: tensors in, P(fake) out, safetensors on disk.

A family subclasses :class:`TorchClassifier`, says how to build its ``nn.Module`` from the options
stored in the manifest and what preprocessing it wants; loading, batched prediction, saving and
Grad-CAM explanations live here once. Modules take a normalised float batch (N, 3, H, W) and
return logits: (N, 2) for a softmax head (class 1 = fake) or (N, 1) for a sigmoid head.
"""

from __future__ import annotations

import hashlib
from abc import abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from fakescan.errors import DetectorError
from worker.detectors.base import Detector, InputNeed, Prediction, Preprocessing
from worker.detectors.device import autocast, place, to_device

if TYPE_CHECKING:
    from fakescan.settings import Settings

WEIGHTS = "model.safetensors"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")
_RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
             "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}


def resized_array(image: Image.Image, preprocessing: Preprocessing) -> np.ndarray:
    """The RGB image at the network's size as a uint8 (H, W, 3) array; training and inference share it."""
    height, width = preprocessing.size
    if image.mode != "RGB":
        image = image.convert("RGB")
    if image.size != (width, height):
        image = image.resize((width, height), _RESAMPLE[preprocessing.resample])
    return np.asarray(image, dtype=np.uint8)


def normalise(batch: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """uint8 (N, H, W, 3) → float (N, 3, H, W) scaled to [0, 1] then standardised."""
    mean = torch.tensor(preprocessing.mean, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(preprocessing.std, device=batch.device).view(1, 3, 1, 1)
    return (batch.permute(0, 3, 1, 2).float().div_(255.0) - mean) / std


def fake_probability(logits: torch.Tensor) -> torch.Tensor:
    logits = logits.float()
    if logits.shape[-1] == 1:
        return torch.sigmoid(logits[:, 0])
    return torch.softmax(logits, dim=-1)[:, 1]


def scored_batch(module: nn.Module, batch: torch.Tensor, flip_average: bool) -> torch.Tensor:
    """P(fake) of a normalised batch; with ``flip_average`` the mean over the image and its mirror.

    Mirrored photos are just as real or fake, and training augments with flips, so averaging the
    two views removes a little of the network's left-right noise (test-time augmentation)."""
    probability = fake_probability(module(batch))
    if flip_average:
        probability = (probability + fake_probability(module(batch.flip(3)))) / 2
    return probability


def weights_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class TorchClassifier(Detector):
    """A PyTorch family: builds its network from the manifest's options; how it trains is the lab's."""

    predict_batch_size: ClassVar[int] = 64
    prepare_keeps_image: ClassVar[bool] = False  # prepare() returns a small uint8 array at the network's size
    # inference options every family accepts besides its own (stored in the manifest's options)
    inference_options: ClassVar[dict[str, Any]] = {"flip_average": False}

    def __init__(self, name: str, version: str, manifest: dict[str, Any], module: nn.Module,
                 device: str = "cpu", precision: str = "fp32") -> None:
        super().__init__(name, version, manifest)
        self.options = dict(manifest.get("options") or {})
        self.preprocessing = Preprocessing.from_json(manifest["preprocessing"])
        self.device, self.precision = device, precision
        self.module = place(module, device, precision)

    # ---- what a family provides -------------------------------------------------------------
    @classmethod
    def default_options(cls) -> dict[str, Any]:
        return {}

    @classmethod
    @abstractmethod
    def build_module(cls, options: dict[str, Any]) -> nn.Module:
        """The untrained network for these (complete) options."""

    @classmethod
    @abstractmethod
    def preprocessing_for(cls, options: dict[str, Any]) -> Preprocessing:
        """Input size and normalisation for these options."""

    def explanation_maps(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-image heat maps (N, h, w) in [0, 1] by name; default none."""
        return {}

    # ---- options, loading, saving -----------------------------------------------------------
    @classmethod
    def complete_options(cls, options: dict[str, Any] | None) -> dict[str, Any]:
        known = {**cls.inference_options, **cls.default_options()}
        unknown = sorted(set(options or {}) - set(known))
        if unknown:
            raise DetectorError(f"family {cls.family!r} has no option {', '.join(unknown)}; "
                                f"known: {', '.join(sorted(known)) or 'none'}")
        return {**known, **(options or {})}

    @classmethod
    def load(cls, folder: Path | None, settings: "Settings", manifest: dict[str, Any]) -> "TorchClassifier":
        if folder is None:
            raise DetectorError(f"family {cls.family!r} needs a detector folder with {WEIGHTS}")
        module = cls.build_module(cls.complete_options(manifest.get("options")))
        try:
            module.load_state_dict(read_weights(folder / WEIGHTS))
        except RuntimeError as error:  # shapes or names that do not fit the manifest's architecture
            raise DetectorError(f"{folder / WEIGHTS} does not fit the {cls.family} architecture in its manifest: "
                                f"{str(error).splitlines()[0]}") from None
        return cls(manifest.get("name", folder.name), str(manifest.get("version", "")), manifest, module,
                   settings.resolved_device(), settings.precision)

    def save(self, folder: Path) -> Path:
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        state = {key: value.detach().cpu().contiguous() for key, value in self.module.state_dict().items()}
        save_file(state, str(folder / WEIGHTS), metadata={"family": self.family})
        self.write_manifest(folder)
        return folder / WEIGHTS

    # ---- inference --------------------------------------------------------------------------
    def input_need(self) -> InputNeed:
        return InputNeed.pixels(self.preprocessing.size)

    def prepare(self, image: Image.Image) -> np.ndarray:
        return resized_array(image, self.preprocessing)

    def prepare_tensor(self, image: torch.Tensor) -> torch.Tensor:
        """A decoded (3, H, W) uint8 tensor (on the GPU after device decoding) as the (h, w, 3) uint8
        input ``prepare`` makes from a PIL image: antialiased bilinear, like Pillow's resize."""
        height, width = self.preprocessing.size
        if tuple(image.shape[1:]) != (height, width):
            mode = "bicubic" if self.preprocessing.resample in ("bicubic", "lanczos") else "bilinear"
            resized = nn.functional.interpolate(image[None].float(), size=(height, width), mode=mode,
                                                antialias=mode != "nearest", align_corners=False)
            image = resized[0].round_().clamp_(0, 255).to(torch.uint8)
        return image.permute(1, 2, 0)

    def batches(self, images: Sequence[Image.Image]) -> Iterator[torch.Tensor]:
        for start in range(0, len(images), self.predict_batch_size):
            yield self.input_batch([self.prepare(image) for image in images[start:start + self.predict_batch_size]])

    def input_batch(self, arrays: Sequence[np.ndarray | torch.Tensor]) -> torch.Tensor:
        """Prepared uint8 inputs as one normalised batch on the device (normalised there: 4x less to copy).

        Inputs prepared on the device (``prepare_tensor``) are stacked there, host arrays copied."""
        if all(isinstance(array, np.ndarray) for array in arrays):
            return normalise(to_device(torch.from_numpy(np.stack(arrays)), self.device), self.preprocessing)
        tensors = [array.to(self.device) if isinstance(array, torch.Tensor)
                   else to_device(torch.tensor(array), self.device) for array in arrays]
        return normalise(torch.stack(tensors), self.preprocessing)

    @torch.inference_mode()
    def scores_of_inputs(self, arrays: Sequence[np.ndarray]) -> list[float]:
        found: list[float] = []
        for start in range(0, len(arrays), self.predict_batch_size):
            batch = self.input_batch(arrays[start:start + self.predict_batch_size])
            with autocast(self.device, self.precision):
                found += scored_batch(self.module, batch, bool(self.options.get("flip_average"))).cpu().tolist()
        return found

    def scores(self, images: Sequence[Image.Image]) -> list[float]:
        return self.scores_of_inputs([self.prepare(image) for image in images])

    def predict(self, images: Sequence[Image.Image]) -> list[Prediction]:
        return self.predict_inputs([self.prepare(image) for image in images])

    def predict_inputs(self, inputs: Sequence[Any]) -> list[Prediction]:
        return [Prediction(score) for score in self.scores_of_inputs(inputs)]

    def explain(self, image: Image.Image) -> dict[str, Image.Image]:
        from worker.detectors.overlays import heatmap_overlay

        batch = next(self.batches([image]))
        with autocast(self.device, self.precision):  # bf16 weights on a bf16 CPU take bf16 inputs
            explained = self.explanation_maps(batch)
        return {name: heatmap_overlay(image, maps[0].float().cpu().numpy()) for name, maps in explained.items()}


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors state dict; pickled checkpoints are refused, never unpickled."""
    from safetensors.torch import load_file

    if not path.is_file():
        pickles = sorted(p.name for p in path.parent.glob("*") if p.suffix in PICKLE_SUFFIXES)
        hint = f" (found {', '.join(pickles)}: pickled checkpoints are refused)" if pickles else ""
        raise DetectorError(f"no {path.name} in {path.parent}{hint}")
    try:
        return load_file(str(path))
    except Exception as error:  # safetensors raises its own SafetensorError on a bad header
        raise DetectorError(f"{path} is not a valid safetensors file: {error}") from None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """User-supplied weights: safetensors, or a torchvision ``.pth`` read with ``weights_only=True``."""
    if path.suffix == ".safetensors":
        return read_weights(path)
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # the restricted unpickler refuses anything but tensors and containers
        raise DetectorError(f"refusing {path}: not a plain tensor checkpoint ({str(error).splitlines()[0]})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DetectorError(f"{path} does not hold a state dict of tensors")
    return state
