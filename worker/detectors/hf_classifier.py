"""Any Hugging Face image-classification checkpoint as a detector.

The folder holds what ``save_pretrained`` writes (``config.json``, safetensors weights, the image
processor config), optionally beside a ``fakescan.json`` manifest. Which class means
"AI-generated" comes from the checkpoint's ``id2label`` (``fake``, ``ai``, ``synthetic`` ...), or
from the manifest key ``fake_label`` (one name or a list) when the checkpoint's names are unusual.
The score is the probability mass of those classes: softmax over the logits, or a sigmoid when
the head has a single logit or the checkpoint was trained multi-label.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from fakescan.errors import DetectorError
from worker.detectors import register_family
from worker.detectors.base import FULL_RESOLUTION, Detector, InputNeed, Prediction
from worker.detectors.device import autocast, place, to_device
from worker.memory import hidden_from_imports

if TYPE_CHECKING:
    from fakescan.settings import Settings

# Installed packages transformers imports when it finds them and a scan never uses: torchvision (for
# the torchvision image processors; checkpoints load their PIL one) and scipy (object-detection
# losses). Kept out of the worker, they save ~45 MB resident (docs/results/2026-12-01-worker-memory-prefetch.md).
UNUSED_BY_SCANS = ("torchvision", "scipy")
# transformers' availability checks are cached: the ones to ask again while those are hidden.
AVAILABILITY_CHECKS = ("is_torchvision_available", "is_torchvision_v2_available", "is_scipy_available")

# Normalised (lower case, "_" and " " as "-") class names that mean AI-generated.
FAKE_LABEL_NAMES = frozenset({
    "fake", "ai", "ai-generated", "ai-image", "artificial", "synthetic", "generated", "deepfake",
})


def _normalise(label: str) -> str:
    return "-".join(label.strip().lower().replace("_", " ").replace("-", " ").split())


def fake_label_indices(id2label: Mapping[Any, str], override: str | Sequence[str] | None = None) -> list[int]:
    """Indices of the classes meaning AI-generated; DetectorError naming the labels when none do."""
    labels = {int(index): str(name) for index, name in id2label.items()}
    if override is not None:
        wanted = {_normalise(override)} if isinstance(override, str) else {_normalise(name) for name in override}
    else:
        wanted = set(FAKE_LABEL_NAMES)
    indices = sorted(index for index, name in labels.items() if _normalise(name) in wanted)
    if not indices:
        shown = ", ".join(repr(labels[index]) for index in sorted(labels))
        how = f"fake_label {override!r} matches none" if override is not None else (
            "none means AI-generated (" + ", ".join(sorted(FAKE_LABEL_NAMES)) + "); set fake_label in fakescan.json")
        raise DetectorError(f"checkpoint labels are {shown}: {how}")
    if len(indices) == len(labels) and len(labels) > 1:
        raise DetectorError(f"every checkpoint label ({', '.join(map(repr, labels.values()))}) would mean AI-generated")
    return indices


def processor_need(processor: Any) -> InputNeed:
    """The pixels an image processor keeps: its fixed size or shortest edge; full resolution when it
    does not resize (or its size is of a kind not known here)."""
    size = getattr(processor, "size", None)
    if not getattr(processor, "do_resize", True) or size is None:
        return FULL_RESOLUTION
    get = size.get if isinstance(size, Mapping) else lambda key: getattr(size, key, None)
    sides = [int(value) for value in (get("height"), get("width"), get("shortest_edge")) if value]
    return InputNeed("size", max(sides)) if sides else FULL_RESOLUTION


def check_checkpoint_folder(folder: Path | None) -> Path:
    """DetectorError unless ``folder`` holds a config.json and safetensors weights (pickles are named, not loaded)."""
    if folder is None or not (folder / "config.json").is_file():
        raise DetectorError(f"no Hugging Face checkpoint (config.json) in {folder}")
    if not any(folder.glob("*.safetensors")):
        pickles = sorted(path.name for path in folder.glob("*.bin"))
        raise DetectorError(f"no safetensors weights in {folder}" + (
            f" ({', '.join(pickles)} is pickled and is not loaded: re-save with safe_serialization=True)"
            if pickles else ""))
    return folder


def route_transformers_logs() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # worker logs are line-oriented; tqdm bars would garble them
    hf_logging.disable_default_handler()  # transformers' records go through fakescan's (JSON) handler
    hf_logging.enable_propagation()


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' warnings silenced for a while (a load report listing tensors left unused on purpose)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def import_transformers() -> None:
    """Import transformers' auto classes; the first time in a process, without ``UNUSED_BY_SCANS``.

    Once its image utilities are imported, transformers has made its choice: nothing to do."""
    if "transformers.image_utils" in sys.modules:
        return
    with hidden_from_imports(UNUSED_BY_SCANS):
        from transformers.utils import import_utils

        for name in AVAILABILITY_CHECKS:  # answered (and cached) by a plain ``import transformers`` before
            getattr(getattr(import_utils, name, None), "cache_clear", lambda: None)()
        import transformers.image_utils  # noqa: F401
        from transformers import AutoImageProcessor, AutoModelForImageClassification  # noqa: F401


def load_checkpoint(folder: Path | None, **model_overrides: Any) -> tuple[Any, Any]:
    """The classification model (eval mode, CPU) and image processor saved in a local folder.

    The processor is the checkpoint's PIL one (``backend="pil"``), in the worker and the lab
    alike, whether or not torchvision is installed: the scores the two see are one function.
    ``model_overrides`` go to ``from_pretrained`` (a fine-tuning run replaces the head with them).
    """
    import_transformers()
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    folder = check_checkpoint_folder(folder)
    route_transformers_logs()
    try:
        model = AutoModelForImageClassification.from_pretrained(folder, local_files_only=True, use_safetensors=True,
                                                                **model_overrides)
        processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True, backend="pil")
    except Exception as error:  # transformers and safetensors raise many kinds for a malformed folder
        raise DetectorError(f"cannot load the checkpoint in {folder}: {error}") from None
    return model.eval(), processor


@register_family("hf-classifier")
class HFClassifier(Detector):
    """A transformers ``AutoModelForImageClassification`` checkpoint scoring P(AI-generated)."""

    predict_batch_size: ClassVar[int] = 32
    prepare_keeps_image: ClassVar[bool] = False  # prepare() returns the processor's arrays

    def __init__(self, name: str, version: str, manifest: dict[str, Any], model: Any, processor: Any,
                 device: str = "cpu", precision: str = "fp32") -> None:
        super().__init__(name, version, manifest)
        self.model = place(model, device, precision)
        self.processor = processor
        self.device = device
        self.precision = precision
        self.fake_indices = fake_label_indices(model.config.id2label, manifest.get("fake_label"))
        self.independent_logits = (model.config.num_labels == 1
                                   or model.config.problem_type == "multi_label_classification")

    @classmethod
    def load(cls, folder: Path | None, settings: "Settings", manifest: dict[str, Any]) -> "HFClassifier":
        model, processor = load_checkpoint(folder)
        return cls(manifest.get("name", folder.name if folder else "hf"), str(manifest.get("version", "")),
                   manifest, model, processor, settings.resolved_device(), settings.precision)

    def input_need(self) -> InputNeed:
        return processor_need(self.processor)

    def prepare(self, image: Image.Image) -> dict[str, np.ndarray]:
        """The processor's arrays for one image (resize, rescale, normalise run in a decode thread)."""
        inputs = self.processor(images=[image.convert("RGB")], return_tensors="np")
        return {key: value[0] for key, value in inputs.items() if isinstance(value, np.ndarray)}

    def pixel_inputs(self, images: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
        return self.stacked([self.prepare(image) for image in images])

    def stacked(self, prepared: Sequence[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        return {key: to_device(torch.from_numpy(np.stack([item[key] for item in prepared])), self.device)
                for key in prepared[0]}

    def fake_probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """P(AI-generated) per row of logits."""
        logits = logits.float()
        if not self.independent_logits:
            return logits.softmax(dim=-1)[:, self.fake_indices].sum(dim=-1)
        return logits.sigmoid()[:, self.fake_indices].amax(dim=-1)

    def predict(self, images: Sequence[Image.Image]) -> list[Prediction]:
        return self.predict_inputs([self.prepare(image) for image in images])

    @torch.inference_mode()
    def predict_inputs(self, prepared: Sequence[Any]) -> list[Prediction]:
        scores: list[float] = []
        for start in range(0, len(prepared), self.predict_batch_size):  # bounds activation memory
            inputs = self.stacked(prepared[start:start + self.predict_batch_size])
            with autocast(self.device, self.precision):
                logits = self.model(**inputs).logits
            scores += self.fake_probabilities(logits).clamp(0.0, 1.0).cpu().tolist()
        return [Prediction(float(score)) for score in scores]
