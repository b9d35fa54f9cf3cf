"""SigLIP2 with a two-class real/fake head (``google/siglip2-base-patch16-224`` architecture).

The fixed-resolution SigLIP2 checkpoints are SigLIP-architecture models (``model_type: siglip``),
so the classifier is transformers' ``SiglipForImageClassification``: the vision tower, mean-pooled
patch tokens, a linear head. A detector folder is a plain Hugging Face checkpoint (config,
safetensors weights, image processor config) plus ``fakescan.json``; ``transformers`` alone can
load it too. Fine-tuning is the lab's (``fakescan train siglip2``); nothing here trains.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image
from torch import nn

from fakescan.catalog import MANIFEST
from fakescan.errors import DetectorError
from worker.detectors import register_family
from worker.detectors.base import Preprocessing
from worker.detectors.hf_classifier import HFClassifier, load_checkpoint

if TYPE_CHECKING:
    from fakescan.settings import Settings

WEIGHTS = "model.safetensors"
SUPPORTED_CLASSES = ("SiglipForImageClassification",)


def check_architecture(model: nn.Module) -> None:
    """Refuse checkpoints this family cannot fine-tune or explain (NaFlex SigLIP2, other ViTs)."""
    if type(model).__name__ not in SUPPORTED_CLASSES:
        raise DetectorError(f"family 'siglip2' needs a fixed-resolution SigLIP2 checkpoint "
                            f"({', '.join(SUPPORTED_CLASSES)}), got {type(model).__name__}; "
                            "other classifiers run as family 'hf-classifier'")


def preprocessing_of(processor: Any) -> Preprocessing:
    """The image processor's fixed input size and normalisation, as fakescan records it."""
    size = processor.size
    height, width = getattr(size, "height", None), getattr(size, "width", None)
    if not height or not width:
        raise DetectorError(f"the checkpoint's image processor has no fixed height/width ({size}); "
                            "family 'siglip2' needs a fixed-resolution checkpoint")
    resample = Image.Resampling(int(processor.resample)).name.lower()
    return Preprocessing((int(height), int(width)), _rgb(processor.image_mean, "image_mean"),
                         _rgb(processor.image_std, "image_std"), resample)


def _rgb(values: Any, name: str) -> tuple[float, float, float]:
    if len(values) != 3:
        raise DetectorError(f"the checkpoint's image processor has {len(values)} {name} values; fakescan feeds RGB (3)")
    red, green, blue = (float(value) for value in values)
    return red, green, blue


def file_digest(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@register_family("siglip2")
class Siglip2Detector(HFClassifier):
    """A fine-tuned SigLIP2 classifier; scoring is the hf-classifier's, loading checks the architecture."""

    @classmethod
    def load(cls, folder: Path | None, settings: "Settings", manifest: dict[str, Any]) -> "Siglip2Detector":
        model, processor = load_checkpoint(folder)
        check_architecture(model)
        return cls(manifest.get("name", folder.name if folder else "siglip2"), str(manifest.get("version", "")),
                   manifest, model, processor, settings.resolved_device(), settings.precision)

    def save(self, folder: Path) -> str:
        """Write the checkpoint, then the manifest naming its weights' hash; returns the new version.

        Files are written beside the folder first and moved in one by one, manifest last, so a
        reader never sees a manifest pointing at weights that are not there yet.
        """
        folder.mkdir(parents=True, exist_ok=True)
        staging = folder / f".partial-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        self.model.save_pretrained(staging, safe_serialization=True)
        self.processor.save_pretrained(staging)
        self.version = f"siglip2-{file_digest(staging / WEIGHTS)[:12]}"
        self.manifest.update(name=self.name, family="siglip2", version=self.version,
                             labels=[self.model.config.id2label[i] for i in range(self.model.config.num_labels)])
        self.write_manifest(staging)
        for path in sorted(staging.iterdir(), key=lambda p: p.name == MANIFEST):
            os.replace(path, folder / path.name)
        staging.rmdir()
        return self.version
