"""Deep SVDD from a backbone the user provides (``fakescan fit-ensemble --svdd-backbone LOCATION``).

The encoder is the checkpoint's vision tower, its final patch tokens mean-pooled (as
``SiglipForImageClassification`` pools them; SigLIP's attention-pooling head is not loaded),
standardised per dimension with statistics of the fit images' features (fixed before training,
like the scratch encoder's channel statistics), then a bias-free linear projection to the
embedding (Ruff et al.). Images arrive at the
ensemble's working size, are resized (bilinear, antialiased) to the tower's input size and
normalised with the checkpoint's image-processor mean and std. The tower sees RGB only, as in
its pretraining: the scratch encoder's Laplacian channels are not added.

What trains is the ``blocks`` entry of the member's ``backbone`` config (``--svdd-backbone-blocks``):

* 0 (default): the projection alone. The frozen tower embeds every fit image and its mirror
  image once and Deep SVDD trains on those features, so fitting costs two tower passes per
  image whatever the number of epochs.
* N > 0: also the weight matrices of the top N encoder blocks; every epoch then runs the tower
  over every image (and the statistics and centre come from the first 1,024 images and their
  mirrors). Biases and layer norms stay frozen, so the network cannot learn a constant output
  that sits on the centre (the collapse Ruff et al. warn of).

Supported: fixed-resolution SigLIP and SigLIP2 checkpoints (``model_type`` ``siglip``: a bare
``SiglipModel``, a ``SiglipForImageClassification`` such as a fakescan ``siglip2`` detector) and
saved SigLIP vision towers (``siglip_vision_model``). The fitted tower is written with
``save_pretrained`` (config.json + safetensors) to ``members/deep-svdd-backbone/``; the
pixel normalisation, feature standardisation, projection and centre go to
``members/deep-svdd.safetensors``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn import functional as F

from fakescan.errors import DetectorError, UsageError
from worker.detectors.ensemble.neural import Standardise, save_state
from worker.detectors.hf_classifier import check_checkpoint_folder, quiet_transformers, route_transformers_logs

if TYPE_CHECKING:
    from fakescan.settings import Settings

BACKBONE_DIR = "deep-svdd-backbone"
TOWER_BATCH = 32  # images per tower pass: bounds the activations of a base-size ViT on CPU
STATISTICS_IMAGES = 1024  # when the tower trains, its statistics and centre come from this many images


@dataclass(frozen=True)
class TowerKind:
    model_class: str  # the transformers class that loads the vision tower alone from such a checkpoint
    processor_class: str  # whose default mean and std apply when there is no preprocessor_config.json


TOWERS = {
    "siglip": TowerKind("SiglipVisionModel", "SiglipImageProcessor"),
    "siglip_vision_model": TowerKind("SiglipVisionModel", "SiglipImageProcessor"),
}


def model_type(folder: Path) -> str:
    try:
        return str(json.loads((folder / "config.json").read_text()).get("model_type"))
    except (OSError, ValueError) as error:
        raise DetectorError(f"cannot read {folder / 'config.json'}: {error}") from None


def tower_kind(folder: Path) -> TowerKind:
    found = model_type(folder)
    if found not in TOWERS:
        raise DetectorError(f"Deep SVDD cannot start from a {found!r} checkpoint ({folder}); supported: "
                            f"fixed-resolution SigLIP / SigLIP2 vision towers (model_type {', '.join(TOWERS)})")
    return TOWERS[found]


def resolve_backbone(location: str, settings: Settings) -> Path:
    """The checked local folder of a backbone folder, s3:// prefix (downloaded once) or detector name."""
    from fakescan import catalog

    try:
        folder = catalog.local_folder(catalog.resolve(location, settings), settings)
    except catalog.UnknownDetector:
        folder = None
    if folder is None or not (folder / "config.json").is_file():
        raise UsageError(f"--svdd-backbone {location}: no Hugging Face checkpoint there "
                         "(need config.json and model.safetensors in a folder or under an s3:// prefix)")
    tower_kind(folder)
    return check_checkpoint_folder(folder)


def backbone_config(location: str, blocks: int, settings: Settings) -> dict[str, Any]:
    """The deep-svdd member config of ``--svdd-backbone``; checks the checkpoint before any image is read."""
    if blocks < 0:
        raise UsageError(f"--svdd-backbone-blocks {blocks}: give 0 (projection only) or more")
    return {"backbone": {"source": location, "folder": str(resolve_backbone(location, settings)), "blocks": blocks}}


def load_tower(folder: Path) -> nn.Module:
    """The checkpoint's vision tower alone, in eval mode, without SigLIP's attention-pooling head."""
    import transformers

    kind = tower_kind(check_checkpoint_folder(folder))
    route_transformers_logs()
    try:
        with quiet_transformers():  # a SiglipModel's load report lists every text-tower tensor left unused
            tower, report = getattr(transformers, kind.model_class).from_pretrained(
                folder, local_files_only=True, use_safetensors=True, vision_use_head=False, output_loading_info=True)
    except Exception as error:  # transformers and safetensors raise many kinds for a malformed folder
        raise DetectorError(f"cannot load the vision tower in {folder}: {error}") from None
    if report["missing_keys"]:
        missing = sorted(report["missing_keys"])
        raise DetectorError(f"{folder} lacks vision-tower weights ({len(missing)} tensors, e.g. {missing[0]})")
    return tower.eval()


def normalisation(folder: Path) -> tuple[list[float], list[float]]:
    """Image mean and std from preprocessor_config.json, else the model type's image-processor defaults."""
    path = folder / "preprocessor_config.json"
    values = json.loads(path.read_text()) if path.is_file() else {}
    if "image_mean" not in values or "image_std" not in values:
        import transformers

        defaults = getattr(transformers, tower_kind(folder).processor_class)()
        values = {"image_mean": defaults.image_mean, "image_std": defaults.image_std}
    return _triple(values["image_mean"]), _triple(values["image_std"])


def _triple(value: Any) -> list[float]:
    return [float(value)] * 3 if isinstance(value, (int, float)) else [float(v) for v in value]


class SVDDHead(nn.Module):
    """What Deep SVDD adds to the tower: pixel normalisation, feature standardisation, projection, centre."""

    pixel_mean: torch.Tensor  # buffers, saved with the weights
    pixel_std: torch.Tensor
    centre: torch.Tensor

    def __init__(self, hidden: int, embedding: int) -> None:
        super().__init__()
        self.register_buffer("pixel_mean", torch.zeros(3))
        self.register_buffer("pixel_std", torch.ones(3))
        self.standardise = Standardise(hidden)
        self.projection = nn.Linear(hidden, embedding, bias=False)
        self.register_buffer("centre", torch.zeros(embedding))

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        return self.projection(self.standardise(features))


class BackboneEncoder(nn.Module):
    batch_size = TOWER_BATCH

    def __init__(self, tower: Any, size: int, embedding: int) -> None:  # tower: a transformers vision model
        super().__init__()
        self.size = size
        self.image_size = int(tower.config.image_size)
        self.tower = tower
        self.head = SVDDHead(int(tower.config.hidden_size), embedding)

    @property
    def centre(self) -> torch.Tensor:
        return self.head.centre

    def features(self, flat: torch.Tensor) -> torch.Tensor:
        """Mean-pooled final tokens of the tower for flattened working-size RGB in [0, 1]."""
        rgb = flat.view(len(flat), 3, self.size, self.size)
        if self.size != self.image_size:
            rgb = F.interpolate(rgb, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False,
                                antialias=True)
        pixels = (rgb - self.head.pixel_mean.view(1, 3, 1, 1)) / self.head.pixel_std.view(1, 3, 1, 1)
        return self.tower(pixel_values=pixels).last_hidden_state.mean(dim=1)

    def feature_distance(self, features: torch.Tensor) -> torch.Tensor:
        return ((self.head.embed(features) - self.centre) ** 2).sum(dim=1)

    def forward(self, flat: torch.Tensor) -> torch.Tensor:
        return self.head.embed(self.features(flat))

    def distance(self, flat: torch.Tensor) -> torch.Tensor:
        return self.feature_distance(self.features(flat))


def build_encoder(folder: Path, size: int, embedding: int) -> tuple[BackboneEncoder, dict[str, Any]]:
    """An untrained encoder over the checkpoint in ``folder`` and what the manifest records of it."""
    mean, std = normalisation(folder)
    encoder = BackboneEncoder(load_tower(folder), size, embedding)
    encoder.head.pixel_mean.copy_(torch.tensor(mean))
    encoder.head.pixel_std.copy_(torch.tensor(std))
    record = {"model_type": model_type(folder), "tower": type(encoder.tower).__name__,
              "image_size": encoder.image_size, "hidden_size": encoder.head.projection.in_features,
              "image_mean": mean, "image_std": std, "pooling": "mean of the final patch tokens"}
    return encoder, record


def unfreeze_top_blocks(encoder: BackboneEncoder, blocks: int) -> int:
    """Freeze the tower except the weight matrices of its top ``blocks`` encoder blocks; returns how many train."""
    layers = list(encoder.tower.encoder.layers)
    chosen = layers[len(layers) - min(blocks, len(layers)):] if blocks > 0 else []
    encoder.tower.requires_grad_(False)
    for layer in chosen:
        for parameter in layer.parameters():
            parameter.requires_grad_(parameter.ndim >= 2)  # biases and layer norms (1-d) stay frozen
    return len(chosen)


@torch.no_grad()
def mirrored_features(encoder: BackboneEncoder, inputs: torch.Tensor, device: str, progress: bool) -> torch.Tensor:
    """Tower features of every image and of its mirror image (mirror images are just as real), on the CPU."""
    from tqdm import tqdm

    encoder.eval()
    parts = []
    for start in tqdm(range(0, len(inputs), TOWER_BATCH), desc="deep-svdd backbone features", leave=False,
                      disable=not progress):
        images = inputs[start:start + TOWER_BATCH].view(-1, 3, encoder.size, encoder.size).to(device)
        both = torch.cat([images, images.flip(3)]).reshape(2 * len(images), -1)
        parts.append(encoder.features(both).cpu())
    return torch.cat(parts)


def save_encoder(encoder: BackboneEncoder, folder: Path, name: str) -> list[str]:
    """The head as ``<name>.safetensors``, the tower via ``save_pretrained``; returns every file written."""
    head = f"{name}.safetensors"
    save_state(encoder.head, folder / head)
    target = folder / BACKBONE_DIR
    shutil.rmtree(target, ignore_errors=True)  # a shard left from an earlier save would be loaded with the new ones
    route_transformers_logs()
    encoder.tower.save_pretrained(target, safe_serialization=True)
    return [head] + sorted(path.relative_to(folder).as_posix() for path in target.rglob("*") if path.is_file())
